"""Runs one client connection: its protocol state, its channels and its outbox.

The transport feeds frames to :meth:`Socket.receive`; the socket runs them through the
sans-I/O :class:`~server.protocol.SocketProtocol`, starts and feeds channel servers, and
writes every resulting frame to the outbox. Closing is idempotent and always ends every
channel (``terminate`` runs, presences leave).

Closing from the server side is graceful: what is already queued for the client goes out,
then the close frame, within ``close_timeout`` (a client that does not read them by then
is reset). Only a slow consumer, whose outbox overflowed, is reset at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from switchboard.actors.token_bucket import TokenBucket
from switchboard.channels.channel import SocketInfo
from switchboard.server import telemetry
from switchboard.server.channel_server import ChannelServer
from switchboard.server.codec import PHX_JOIN, Frame
from switchboard.server.errors import ProtocolError
from switchboard.server.outbox import Outbox
from switchboard.server.protocol import JoinRequested, LeaveRequested, PushReceived, SocketProtocol
from switchboard.server.registry import GOING_AWAY
from switchboard.server.socket import Socket

if TYPE_CHECKING:
    from switchboard.channels.router import Router
    from switchboard.server.node import Node

logger = logging.getLogger("switchboard.socket")

# Close codes. phoenix.js reconnects on anything but 1000, so we never use 1000.
# GOING_AWAY (1001): disconnect broadcast, idle.
SERVICE_RESTART = 1012  # the node drains: reconnect (through the balancer) to another
POLICY_VIOLATION = 1008  # bad frames, flooding
TRY_AGAIN_LATER = 1013  # slow consumer

RATE_LIMITED = {"reason": "rate_limited"}


class Connection(Protocol):
    """What the transport lets a socket do to its connection."""

    #: Write a frame at once if the connection takes it without waiting (False: it would
    #: wait); None where the server offers no such path.
    try_write: Callable[[Frame], bool] | None

    def send(self, frame: Frame) -> Coroutine[Any, Any, None]:
        """Send a frame, waiting while the client reads slower than we write."""
        ...

    def close(
        self, code: int, reason: str, pending: asyncio.Task[None] | None
    ) -> asyncio.Task[None] | None:
        """Once ``pending`` (the outbox's last writes) is done, send the close frame; reset
        the connection if that takes longer than the close timeout. Returns the task still
        closing, if any."""
        ...

    def reset(self) -> None:
        """Abort the connection at once (TCP reset), dropping whatever is unsent."""
        ...


class SocketServer:
    """The server side of one :class:`~switchboard.server.socket.Socket`: it registers
    with the node when made and unregisters when closed."""

    __slots__ = (
        "node",
        "router",
        "counters",
        "serial",
        "handler",
        "info",
        "protocol",
        "outbox",
        "channels",
        "closed",
        "close_code",
        "last_seen",
        "address",
        "connected_at",
        "received",
        "connection",
        "_closing",
        "_join_bucket",
        "_push_bucket",
        "_rejected_in_a_row",
    )

    def __init__(
        self,
        node: Node,
        router: Router,
        serial: int,
        handler: Socket,
        socket_id: str | None,
        connection: Connection,
        address: str = "",
    ) -> None:
        self.node = node
        self.router = router
        self.counters = node.counters
        self.serial = serial
        self.handler = handler
        self.info = SocketInfo(socket_id, handler.assigns)
        settings = node.settings
        self.protocol = SocketProtocol(
            router.matches,
            max_channels=settings.max_channels,
            max_frame_size=settings.max_frame_size,
        )
        self.connection = connection
        self.outbox = Outbox(
            connection.send,
            settings.outbox_limit,
            self.slow_consumer,
            self._send_failed,
            connection.try_write,
        )
        self.channels: dict[str, ChannelServer] = {}
        self.closed = False
        self.close_code: int | None = None
        self.last_seen = now = time.monotonic()
        # For the console's connections list; frames out are the outbox's count.
        self.address = address
        self.connected_at = time.time()
        self.received = 0
        self._closing: asyncio.Task[None] | None = None
        # Join and push limits are per-socket state, so the socket owns them: checking them
        # costs no actor round trip on the push path.
        self._join_bucket = self._push_bucket = None
        if settings.limits:
            self._join_bucket = TokenBucket(*settings.rate("join_rate"), now)
            self._push_bucket = TokenBucket(*settings.rate("push_rate"), now)
        self._rejected_in_a_row = 0
        node.sockets.add(self)
        telemetry.execute(
            telemetry.CONNECT, {"count": 1}, {"socket_id": socket_id, "node": node.id}
        )

    def __repr__(self) -> str:
        return f"<SocketServer {self.info.id} serial={self.serial}>"

    # -- inbound ---------------------------------------------------------------------------

    def receive(self, data: Frame) -> None:
        """A frame from the client. Every frame counts toward the socket's rate limits, joins
        against the join rate, all others (heartbeats, leaves, pushes to any topic) against
        the push rate; one over the limit gets an error reply and nothing else."""
        if self.closed:
            return
        self.last_seen = now = time.monotonic()
        self.counters.messages_in += 1
        self.received += 1
        protocol = self.protocol
        try:
            message = protocol.decode(data)
        except ProtocolError as exc:
            logger.warning("closing socket %s: %s", self.info.id, exc)
            self.flush()
            self.close(exc.code, exc.reason)
            return
        if self._limited(message.event == PHX_JOIN, now):
            protocol.refuse(message, RATE_LIMITED)
            self.flush()
            self._flooding()
            return
        protocol.handle(message)
        for event in protocol.events_received():
            if type(event) is PushReceived:
                channel = self.channels.get(event.message.topic)
                if channel is not None:
                    channel.post_in(event.message)
            elif type(event) is JoinRequested:
                self._join(event)
            elif type(event) is LeaveRequested:
                channel = self.channels.get(event.topic)
                if channel is not None:
                    channel.post_leave(event.ref)
                else:
                    protocol.left(event.topic, event.join_ref, event.ref)
        self.flush()

    def ping_received(self, unsent: int) -> bool:
        """A WebSocket ping from the client: it counts like any frame. True if it may be
        answered, given that ``unsent`` bytes (the pong included) would then wait for the
        client; False if it is over the rate, or the client does not read its pongs."""
        if self.closed:
            return False
        self.last_seen = now = time.monotonic()
        self.counters.messages_in += 1
        self.received += 1
        if self._limited(False, now):
            self._flooding()
            return False
        if unsent + self.outbox.queued_bytes > self.outbox.limit:
            self.slow_consumer()
            return False
        return True

    def _limited(self, join: bool, now: float) -> bool:
        """Take a token for a frame; True if it is over the rate (and counted as such)."""
        bucket = self._join_bucket if join else self._push_bucket
        if bucket is None or not bucket.take(now):
            self._rejected_in_a_row = 0
            return False
        self.counters.count_rate_limited("join" if join else "push", self.info.id)
        self._rejected_in_a_row += 1
        return True

    def _flooding(self) -> None:
        """Close the socket if it keeps sending over the rate."""
        if self._rejected_in_a_row < self.node.settings.flood_disconnect:
            return
        logger.warning(
            "closing socket %s: still flooding after %d rate-limited messages",
            self.info.id,
            self._rejected_in_a_row,
        )
        self.close(POLICY_VIOLATION, "rate limited")

    def _join(self, event: JoinRequested) -> None:
        if event.replaces is not None:
            old = self.channels.pop(event.topic, None)
            if old is not None:
                old.shutdown("duplicate_join")
        channel_class = self.router.match(event.topic)
        assert channel_class is not None  # the protocol only emits joins for routed topics
        server = ChannelServer(self, channel_class, event.topic, event.join_ref)
        self.channels[event.topic] = server
        server.post_join(event.payload, event.ref)

    def channel_joined(self, server: ChannelServer) -> None:
        self.counters.joined_channels += 1

    def channel_stopped(self, server: ChannelServer, was_joined: bool) -> None:
        if self.channels.get(server.topic) is server:
            del self.channels[server.topic]
        if was_joined:
            self.counters.joined_channels -= 1

    # -- outbound --------------------------------------------------------------------------

    def flush(self) -> None:
        frames = self.protocol.data_to_send()
        if frames:
            self.counters.frames_out += len(frames)
            for frame in frames:
                self.outbox.put(frame)

    def slow_consumer(self) -> None:
        """The client does not take what we write (the outbox, or pongs, are over the outbox
        limit): reset the connection, since such a client would never get a close frame
        either."""
        self.outbox.close()
        logger.warning(
            "closing socket %s: slow consumer, outbound queue over %d bytes",
            self.info.id,
            self.outbox.limit,
        )
        self.counters.slow_consumers += 1
        if not self.closed:
            self.close_code = TRY_AGAIN_LATER
            self._end("closed: slow consumer")
        self.connection.reset()

    def _send_failed(self, exc: BaseException) -> None:
        logger.debug("socket %s: write failed (%r); client gone", self.info.id, exc)
        self.connection_lost()

    # -- closing ---------------------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Answer what the client already sent, then close with 1012 so it reconnects."""
        busy = [channel.wait_idle() for channel in list(self.channels.values())]
        if busy:
            try:
                await asyncio.wait_for(asyncio.gather(*busy), timeout)
            except TimeoutError:
                logger.warning(
                    "socket %s: pushes still running after %.1f s of drain", self.info.id, timeout
                )
        self.flush()
        self.close(SERVICE_RESTART, "node draining")
        if self._closing is not None:
            # The replies just flushed are still going out: wait for them and the close
            # frame (bounded by the close timeout, after which the connection is reset).
            await asyncio.wait([self._closing])

    def close(self, code: int = GOING_AWAY, reason: str = "") -> None:
        """Close from the server side with ``code`` (never 1000: clients must come back):
        what is queued goes out first, then the close frame."""
        if self.closed:
            return
        self.close_code = code
        self._end(f"closed: {reason or code}")
        self._closing = self.connection.close(code, reason, self.outbox.finish())

    def connection_lost(self) -> None:
        """The client went away (or its transport failed)."""
        if not self.closed:
            self._end("disconnected")
            self.outbox.close()
            self.connection.close(GOING_AWAY, "", None)

    def _end(self, reason: str) -> None:
        self.closed = True
        for server in list(self.channels.values()):
            server.shutdown(reason)
        self.node.sockets.remove(self)
        self.node.admission.release(self.serial)
