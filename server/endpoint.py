"""The node: settings, router, pub/sub and every open socket.

It also owns the per-socket-id topic that lets a backend log a user out everywhere: a
``disconnect`` broadcast on ``users_socket:<user_id>`` closes all of that user's sockets,
on every node, with 1001 (phoenix.js then reconnects with whatever token it now has).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from switchboard.channels.channel import SocketInfo
from switchboard.channels.router import Router
from switchboard.server import telemetry
from switchboard.server.codec import Frame
from switchboard.server.config import Settings
from switchboard.server.outbox import SendFunction
from switchboard.server.pubsub import PubSub
from switchboard.server.socket import GOING_AWAY, Socket
from switchboard.server.tasks import stop_tasks

if TYPE_CHECKING:
    from switchboard.actors.supervisor import SupervisorEvent
    from switchboard.presence.tracker import Presence
    from switchboard.server.channel_server import ChannelServer
    from switchboard.server.stats import ClusterStats
    from switchboard.server.supervision import ActorTree

logger = logging.getLogger("switchboard.endpoint")
lifecycle = logging.getLogger("switchboard.lifecycle")


def socket_id_topic(user_id: str) -> str:
    return f"users_socket:{user_id}"


def socket_owner(serial: int) -> str:
    """The presence owner of a socket's entry in the ``connections`` topic."""
    return f"socket:{serial}"


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a socket may open; if not, the HTTP status (and headers) refusing it."""

    serial: int = 0
    status: int = 0
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def admitted(self) -> bool:
        return self.status == 0


CACHE_TOPIC = "switchboard:cache"


class _CacheInvalidations:
    """Applies other nodes' cache invalidations here, without sending them back."""

    __slots__ = ("endpoint",)

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def deliver(self, event: str, frame: Frame) -> None:
        from switchboard.actors.bridge import tell
        from switchboard.actors.cache import CacheDelete, CacheInvalidatePrefix

        actors = self.endpoint.actors
        if actors is None or not isinstance(frame, str):
            return
        if event == "delete":
            tell(actors.cache, CacheDelete(frame, propagate=False))
        elif event == "prefix":
            tell(actors.cache, CacheInvalidatePrefix(frame, propagate=False))

    def publish(self, kind: str, key_or_prefix: str) -> None:
        self.endpoint.pubsub.backend.publish(CACHE_TOPIC, kind, key_or_prefix)


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
    def __init__(
        self,
        settings: Settings,
        router: Router,
        pubsub: PubSub,
        node: str,
        actors: ActorTree | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.pubsub = pubsub
        self.node = node
        self.actors = actors
        self.presence: Presence | None = None
        self.stats: ClusterStats | None = None
        self._serials = itertools.count(1)
        self.sockets: set[Socket] = set()
        self.sockets_by_id: dict[str, set[Socket]] = {}
        self._listeners: dict[str, _DisconnectListener] = {}
        self.joined_channels = 0
        self.slow_consumers = 0
        self.messages_in = 0
        self.frames_out = 0
        self.rate_limited: dict[str, int] = {}
        self.accepting = True
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.pubsub.start()
        if self.actors is not None:
            from switchboard.presence.tracker import Presence

            invalidations = _CacheInvalidations(self)
            self.pubsub.subscribe(CACHE_TOPIC, invalidations)
            self.actors.on_cache_invalidate = invalidations.publish
            await self.actors.start()
            settings = self.settings
            self.presence = Presence(
                self.pubsub,
                self.node,
                self.actors.presence,
                self.actors.cache,
                heartbeat=settings.presence_heartbeat,
                down_after=settings.node_timeout,
                timeout=settings.actor_timeout,
            )
            self.actors.listeners.append(self._actor_event)
            await self.presence.start()
        self.pubsub.backend.add_reconnect_listener(self._backend_reconnected)
        from switchboard.server.stats import ClusterStats

        self.stats = ClusterStats(self)
        await self.stats.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_idle())

    async def stop(self) -> None:
        if self._sweeper is not None:
            await stop_tasks([self._sweeper])
        for socket in list(self.sockets):
            socket.close(GOING_AWAY, "server shutting down")
        if self.stats is not None:
            await self.stats.stop()
        if self.presence is not None:
            await self.presence.stop()
        if self.actors is not None:
            await self.actors.stop()
        await self.pubsub.stop()

    def _backend_reconnected(self) -> None:
        """Broadcasts during the outage are lost: drop what the cache may hold that another
        node invalidated meanwhile, and ask every node for its presences again."""
        logger.info("pub/sub back: clearing the cache and resyncing presence")
        if self.actors is not None:
            from switchboard.actors.bridge import tell
            from switchboard.actors.cache import CacheInvalidatePrefix

            tell(self.actors.cache, CacheInvalidatePrefix("", propagate=False))
        if self.presence is not None:
            self.presence.resync()

    async def drain(self, period: float) -> None:
        """Stop taking sockets, then close the open ones in batches spread over ``period``.

        Readiness turns 503 at once, so the balancer sends no new clients. Each socket first
        answers the pushes it already received, then closes with 1012, so phoenix.js
        reconnects, through the balancer, to another node. Presence leaves go out as each
        channel ends; other nodes' clients see them as ordinary diffs.
        """
        self.accepting = False
        sockets = list(self.sockets)
        logger.info(
            "draining %d sockets over %.1f s",
            len(sockets),
            period,
            extra={"event": "drain_started"},
        )
        batches = max(1, min(len(sockets), 10))
        size = -(-len(sockets) // batches)  # ceiling division
        for index in range(batches):
            batch = sockets[index * size : (index + 1) * size]
            await asyncio.gather(
                *(socket.drain(timeout=5.0) for socket in batch if not socket.closed)
            )
            if index < batches - 1:
                await asyncio.sleep(period / batches)
        if self.presence is not None:
            await self.presence.settle()
        lifecycle.info("drained", extra={"event": "drain_finished"})

    def _actor_event(self, event: SupervisorEvent) -> object:
        if event.kind == "restart":
            telemetry.execute(
                telemetry.ACTOR_RESTART,
                {"count": 1},
                {"actor": event.child, "reason": event.reason},
            )
        if event.child != "presence" or self.presence is None:
            return None
        if event.kind == "child_failed":
            self.presence.actor_failed()
        elif event.kind == "restart":
            return self.presence.actor_restarted()
        return None

    @property
    def healthy(self) -> bool:
        return self.actors is None or self.actors.healthy

    # -- admission -------------------------------------------------------------------------

    async def admit_ip(self, ip: str) -> Admission:
        """Connect attempts per client IP, before the token is even looked at."""
        if not self.settings.limits or self.actors is None:
            return Admission()
        from switchboard.actors.bridge import ask
        from switchboard.actors.errors import ActorError
        from switchboard.actors.limiter import Acquire

        try:
            decision = await ask(
                self.actors.limiter, Acquire("connect", ip), timeout=self.settings.actor_timeout
            )
        except ActorError as exc:
            return Admission(status=503, reason=f"rate limiter unavailable: {exc}")
        if decision.allowed:
            return Admission()
        self.count_rate_limited("connect", ip)
        retry = str(max(1, round(decision.retry_after)))
        return Admission(
            status=429, reason="too many connection attempts", headers={"Retry-After": retry}
        )

    def count_rate_limited(self, kind: str, key: str) -> None:
        self.rate_limited[kind] = self.rate_limited.get(kind, 0) + 1
        telemetry.execute(telemetry.RATE_LIMITED, {"count": 1}, {"kind": kind, "key": key})

    async def admit_user(self, user_id: str) -> Admission:
        """Register the socket in the ``connections`` presence topic, unless the user is at
        the per-user limit (counted over every node of the cluster)."""
        serial = next(self._serials)
        if self.presence is None or not self.settings.presence:
            return Admission(serial)
        from switchboard.actors.errors import ActorError
        from switchboard.presence.tracker import CONNECTIONS_TOPIC

        limit = self.settings.user_socket_limit if self.settings.limits else None
        meta = {"node": self.node, "connected_at": int(time.time())}
        try:
            tracked = await self.presence.track(
                socket_owner(serial), CONNECTIONS_TOPIC, socket_id_topic(user_id), meta, limit
            )
        except ActorError as exc:
            return Admission(status=503, reason=f"presence unavailable: {exc}")
        if not tracked:
            return Admission(status=403, reason=f"user already has {limit} sockets open")
        return Admission(serial)

    def release(self, serial: int) -> None:
        """An admitted socket never opened (or has closed): drop its connection entry."""
        if self.presence is not None and self.settings.presence:
            self.presence.forget(socket_owner(serial))

    # -- sockets ---------------------------------------------------------------------------

    def open_socket(
        self,
        serial: int,
        user_id: str,
        send: SendFunction,
        close_transport: Callable[[int, str], None],
        admin: bool = False,
        try_write: Callable[[Frame], bool] | None = None,
    ) -> Socket:
        socket_id = socket_id_topic(user_id)
        assigns: dict[str, object] = {"admin": True} if admin else {}
        info = SocketInfo(socket_id, user_id, assigns)
        socket = Socket(self, serial, info, send, close_transport, try_write)
        telemetry.execute(telemetry.CONNECT, {"count": 1}, {"user_id": user_id, "node": self.node})
        self.sockets.add(socket)
        same_id = self.sockets_by_id.setdefault(socket_id, set())
        same_id.add(socket)
        if socket_id not in self._listeners:
            listener = self._listeners[socket_id] = _DisconnectListener(self, socket_id)
            self.pubsub.subscribe(socket_id, listener)
        return socket

    def socket_closed(self, socket: Socket) -> None:
        self.sockets.discard(socket)
        self.release(socket.serial)
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
