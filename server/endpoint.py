"""``Endpoint``: your socket class served by a Switchboard node, to run or to mount.

``switchboard serve module:Socket`` runs one. To add Switchboard to a Starlette or FastAPI
app you already have, make one and give the host app its routes and its lifespan::

    endpoint = Endpoint(ChatSocket)                  # settings from SWITCHBOARD_* variables
    app = Starlette(routes=[..., *endpoint.routes], lifespan=endpoint.lifespan)

    app = FastAPI(lifespan=endpoint.lifespan)        # FastAPI: the same two things
    app.router.routes.extend(endpoint.routes)

``endpoint.routes`` is the socket at ``/socket/websocket`` (phoenix.js:
``new Socket("/socket")``); ``endpoint.app`` is the whole standalone application (socket,
health, metrics, HTTP API, dashboard) to ``Mount`` under a prefix instead. The lifespan
starts the node (pub/sub, actors, presence) and stops it; a host app with a lifespan of its
own enters ``endpoint.lifespan(app)`` inside it. ``broadcast`` and ``disconnect`` publish
from the host app's own code (Phoenix's ``Endpoint.broadcast``).
"""

from __future__ import annotations

import contextlib
import secrets
import socket as pysocket
from collections.abc import AsyncIterator, Callable
from functools import cached_property
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, WebSocketRoute

from switchboard.channels.channel import Payload
from switchboard.channels.router import Router
from switchboard.server.admin import ADMIN_SOCKET_PATH, AdminSocket
from switchboard.server.config import Settings
from switchboard.server.node import Node
from switchboard.server.pubsub import PubSub, backend_from_url
from switchboard.server.socket import Socket
from switchboard.server.supervision import ActorTree
from switchboard.server.transport import SocketEndpoint, socket_endpoint

SOCKET_PATH = "/socket/websocket"


def node_id(settings: Settings) -> str:
    """``name:bootid``: the name is stable across restarts, the boot id is not."""
    name = settings.node_name or f"{pysocket.gethostname()}:{settings.port}"
    return f"{name}:{secrets.token_hex(3)}"


def router_for(socket_class: type[Socket], profile: str) -> Router:
    """The socket's ``channels``, plus the suites' ``test:*`` in the test profile."""
    router = Router.of(socket_class.channels)
    if profile == "test":
        from switchboard.channels.testing import TestChannel

        router.channel("test:*", TestChannel)
    return router


def history_topics(routers: list[Router]) -> Callable[[str], bool]:
    """Whether a topic keeps history: its channel class (the first router's that matches)
    says so with ``history = True``."""

    def keeps_history(topic: str) -> bool:
        for router in routers:
            channel = router.match(topic)
            if channel is not None:
                return channel.history
        return False

    return keeps_history


class Endpoint:
    """A node serving ``socket``; see the module docstring."""

    def __init__(self, socket: type[Socket], *, settings: Settings | None = None) -> None:
        if not (isinstance(socket, type) and issubclass(socket, Socket)):
            raise TypeError(f"{socket!r} is not a switchboard.Socket subclass")
        self.settings = settings if settings is not None else Settings.from_env()
        self.socket_class = socket
        node = node_id(self.settings)
        routers: dict[str, tuple[type[Socket], Router]] = {
            SOCKET_PATH: (socket, router_for(socket, self.settings.profile)),
            ADMIN_SOCKET_PATH: (AdminSocket, Router.of(AdminSocket.channels)),
        }
        limits = self.settings.history_limits()
        pubsub = PubSub(
            backend_from_url(self.settings.pubsub_url, limits),
            node,
            history=None if limits is None else history_topics([r for _, r in routers.values()]),
        )
        self.node = Node(self.settings, pubsub, node, ActorTree(self.settings, node))
        #: Path -> endpoint of every socket this node serves: the app's and the admin one.
        self.sockets: dict[str, SocketEndpoint] = {
            path: socket_endpoint(self.node, socket_class, router)
            for path, (socket_class, router) in routers.items()
        }

    @property
    def routes(self) -> list[BaseRoute]:
        """The socket routes, to add to a host app's routes."""
        return [WebSocketRoute(path, endpoint) for path, endpoint in self.sockets.items()]

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """Runs the node for as long as the host app runs."""
        await self.node.start()
        try:
            yield
        finally:
            await self.node.stop()

    @cached_property
    def app(self) -> Starlette:
        """The standalone application: what ``switchboard serve`` runs."""
        from switchboard.server.app import build_app

        return build_app(self)

    def broadcast(self, topic: str, event: str, payload: Payload) -> None:
        """Broadcast ``event`` to every subscriber of ``topic``, on every node.

        On a topic that keeps history it raises
        :class:`~switchboard.server.pubsub.Unavailable` if the broadcast cannot be kept,
        not even buffered (a long pub/sub outage filled the buffer): send it again later.
        """
        self.node.pubsub.broadcast(topic, event, payload)

    def disconnect(self, socket_id: str) -> None:
        """Close every socket whose ``Socket.id()`` is ``socket_id``, on every node."""
        self.node.pubsub.broadcast(socket_id, "disconnect", {})
