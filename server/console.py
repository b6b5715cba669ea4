"""What each node answers the console (through :mod:`.cluster_call`): its connections with
their facts, closing some of them, its topics and a topic's numbers.

A connection's facts cost nothing on the message path beyond two counters that each socket
bumps anyway (frames in, frames out); everything else is read when the console asks.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from switchboard.presence.tracker import node_name
from switchboard.server.registry import GOING_AWAY
from switchboard.server.stats import app_topics

if TYPE_CHECKING:
    from switchboard.server.node import Node
    from switchboard.server.socket_server import SocketServer

MAX_LISTED = 1000  # entries one node returns for one page at most
DISCONNECT_REASON = "disconnected by an operator"


def connection_id(node: Node, socket: SocketServer) -> str:
    return f"{node.id}/{socket.serial}"


def connection_facts(node: Node, socket: SocketServer) -> dict[str, Any]:
    user = socket.info.assigns.get("user_id")
    return {
        "id": connection_id(node, socket),
        "node": node_name(node.id),
        "socket_id": socket.info.id,
        "user": None if user is None else str(user),
        "admin": bool(socket.info.assigns.get("admin")),
        "address": socket.address,
        "connected_at": socket.connected_at,
        "channels": sorted(socket.channels),
        "messages_in": socket.received,
        "messages_out": socket.outbox.frames,
    }


def _matches(facts: dict[str, Any], query: str) -> bool:
    if not query:
        return True
    fields = [facts["user"] or "", facts["socket_id"] or "", facts["address"], facts["id"]]
    return any(query in field.lower() for field in [*fields, *facts["channels"]])


class NodeConsole:
    """The handlers each node registers with its :class:`~.cluster_call.ClusterCall`."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def register(self) -> None:
        calls = self.node.calls
        calls.handle("connections", self.connections)
        calls.handle("disconnect", self.disconnect)
        calls.handle("topics", self.topics)

    async def connections(self, args: dict[str, Any]) -> dict[str, Any]:
        """Matching connections, newest first: the first ``limit`` and how many in all."""
        query = str(args.get("q") or "").lower()
        limit = min(int(args.get("limit") or 50), MAX_LISTED)
        found = [
            facts
            for facts in (connection_facts(self.node, s) for s in self.node.sockets)
            if _matches(facts, query)
        ]
        found.sort(key=lambda f: (-f["connected_at"], f["id"]))
        return {"total": len(found), "connections": found[:limit]}

    async def disconnect(self, args: dict[str, Any]) -> dict[str, Any]:
        """Close the connection ``args["connection"]``, or every one of user ``args["user"]``;
        with 1001, so the client may reconnect (the app's ``connect`` decides if it may)."""
        connection, user = args.get("connection"), args.get("user")
        closed = []
        for socket in self.node.sockets:
            if socket.closed:
                continue
            if connection is not None and connection_id(self.node, socket) != connection:
                continue
            socket_user = socket.info.assigns.get("user_id")
            if user is not None and (socket_user is None or str(socket_user) != user):
                continue
            closed.append(connection_facts(self.node, socket))
            socket.close(GOING_AWAY, DISCONNECT_REASON)
        return {"closed": closed}

    async def topics(self, args: dict[str, Any]) -> dict[str, Any]:
        """This node's app topics matching ``q`` (or exactly ``topic``), busiest first."""
        query = str(args.get("q") or "").lower()
        exact = args.get("topic")
        limit = min(int(args.get("limit") or 50), MAX_LISTED)
        rates = self.node.stats.topic_rates if self.node.stats is not None else {}
        subscribers = app_topics(self.node)
        if exact is not None:
            found = [exact] if exact in subscribers else []
        else:
            found = [t for t in subscribers if query in t.lower()]
        found.sort(key=lambda t: (-subscribers[t], t))
        return {
            "total": len(found),
            "topics": [
                {
                    "topic": t,
                    "subscribers": subscribers[t],
                    "messages_per_s": rates.get(t, 0.0),
                }
                for t in found[:limit]
            ],
            "at": time.time(),
        }
