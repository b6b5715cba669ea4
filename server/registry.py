"""Every open socket of this node, by socket id, and what closes them by id.

A ``disconnect`` broadcast on a socket id (from any node, a channel's ``broadcast_to``,
the HTTP API or an emitter) closes every socket with that id here with 1001; phoenix.js
then reconnects with whatever credentials it has by then.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from switchboard.server.codec import Frame
from switchboard.server.pubsub import PubSub

if TYPE_CHECKING:
    from switchboard.server.socket_server import SocketServer

GOING_AWAY = 1001


class _DisconnectListener:
    """Subscribed to a socket id's topic; closes that id's sockets on ``disconnect``."""

    __slots__ = ("registry", "socket_id")

    def __init__(self, registry: SocketRegistry, socket_id: str) -> None:
        self.registry = registry
        self.socket_id = socket_id

    def deliver(self, event: str, frame: Frame) -> None:
        if event == "disconnect":
            for socket in list(self.registry.with_id(self.socket_id)):
                socket.close(GOING_AWAY, "disconnect")


class SocketRegistry:
    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub
        self._sockets: set[SocketServer] = set()
        self._by_id: dict[str, set[SocketServer]] = {}
        self._listeners: dict[str, _DisconnectListener] = {}

    def __len__(self) -> int:
        return len(self._sockets)

    def __iter__(self) -> Iterator[SocketServer]:
        return iter(list(self._sockets))

    def with_id(self, socket_id: str) -> set[SocketServer]:
        return self._by_id.get(socket_id, set())

    def add(self, socket: SocketServer) -> None:
        self._sockets.add(socket)
        socket_id = socket.info.id
        if socket_id is None:
            return
        self._by_id.setdefault(socket_id, set()).add(socket)
        if socket_id not in self._listeners:
            listener = self._listeners[socket_id] = _DisconnectListener(self, socket_id)
            self.pubsub.subscribe(socket_id, listener)

    def remove(self, socket: SocketServer) -> None:
        self._sockets.discard(socket)
        socket_id = socket.info.id
        same_id = self._by_id.get(socket_id) if socket_id is not None else None
        if same_id is None:
            return
        same_id.discard(socket)
        if not same_id:
            del self._by_id[socket_id]  # type: ignore[arg-type]
            listener = self._listeners.pop(socket_id, None)  # type: ignore[arg-type]
            if listener is not None:
                self.pubsub.unsubscribe(socket_id, listener)  # type: ignore[arg-type]
