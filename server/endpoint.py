"""The node: settings, router, pub/sub and every open socket.

It also owns the per-socket-id topic that lets a backend log a user out everywhere: a
``disconnect`` broadcast on ``users_socket:<user_id>`` closes all of that user's sockets,
on every node, with 1001 (phoenix.js then reconnects with whatever token it now has).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from channels.channel import SocketInfo
from channels.router import Router
from server.codec import Frame
from server.config import Settings
from server.outbox import SendFunction
from server.pubsub import PubSub
from server.socket import GOING_AWAY, Socket

if TYPE_CHECKING:
    from server.channel_server import ChannelServer

logger = logging.getLogger("switchboard.endpoint")


def socket_id_topic(user_id: str) -> str:
    return f"users_socket:{user_id}"


class _DisconnectListener:
    """Subscribed to a socket id's topic; closes that id's sockets on ``disconnect``."""

    __slots__ = ("endpoint", "socket_id")

    def __init__(self, endpoint: Endpoint, socket_id: str) -> None:
        self.endpoint = endpoint
        self.socket_id = socket_id

    def deliver(self, event: str, frame: Frame) -> None:
        if event == "disconnect":
            for socket in list(self.endpoint.sockets_by_id.get(self.socket_id, ())):
                socket.close(GOING_AWAY, "disconnect")


class Endpoint:
    def __init__(self, settings: Settings, router: Router, pubsub: PubSub, node: str) -> None:
        self.settings = settings
        self.router = router
        self.pubsub = pubsub
        self.node = node
        self.sockets: set[Socket] = set()
        self.sockets_by_id: dict[str, set[Socket]] = {}
        self._listeners: dict[str, _DisconnectListener] = {}
        self.joined_channels = 0
        self.slow_consumers = 0
        self.accepting = True
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.pubsub.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_idle())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        for socket in list(self.sockets):
            socket.close(GOING_AWAY, "server shutting down")
        await self.pubsub.stop()

    # -- sockets ---------------------------------------------------------------------------

    def open_socket(
        self, user_id: str, send: SendFunction, close_transport: Callable[[int, str], None]
    ) -> Socket:
        socket_id = socket_id_topic(user_id)
        socket = Socket(self, SocketInfo(socket_id, user_id, {}), send, close_transport)
        self.sockets.add(socket)
        same_id = self.sockets_by_id.setdefault(socket_id, set())
        same_id.add(socket)
        if socket_id not in self._listeners:
            listener = self._listeners[socket_id] = _DisconnectListener(self, socket_id)
            self.pubsub.subscribe(socket_id, listener)
        return socket

    def socket_closed(self, socket: Socket) -> None:
        self.sockets.discard(socket)
        socket_id = socket.info.id
        same_id = self.sockets_by_id.get(socket_id)
        if same_id is None:
            return
        same_id.discard(socket)
        if not same_id:
            del self.sockets_by_id[socket_id]
            listener = self._listeners.pop(socket_id, None)
            if listener is not None:
                self.pubsub.unsubscribe(socket_id, listener)

    def sockets_of_user(self, user_id: str) -> int:
        return len(self.sockets_by_id.get(socket_id_topic(user_id), ()))

    def channel_joined(self, socket: Socket, server: ChannelServer) -> None:
        self.joined_channels += 1

    def channel_left(self, socket: Socket, server: ChannelServer) -> None:
        self.joined_channels -= 1

    async def _sweep_idle(self) -> None:
        """Close sockets that sent nothing (not even a heartbeat) for ``idle_timeout``."""
        timeout = self.settings.idle_timeout
        while True:
            await asyncio.sleep(max(1.0, timeout / 4))
            deadline = time.monotonic() - timeout
            for socket in [s for s in self.sockets if s.last_seen < deadline]:
                logger.info(
                    "closing idle socket %s (nothing received for %.0f s)", socket.info.id, timeout
                )
                socket.close(GOING_AWAY, "idle")
