"""One client connection: its protocol state, its channels and its outbox.

The transport feeds frames to :meth:`Socket.receive`; the socket runs them through the
sans-I/O :class:`~server.protocol.SocketProtocol`, starts and feeds channel servers, and
writes every resulting frame to the outbox. Closing is idempotent and always ends every
channel (``terminate`` runs, presences leave).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from channels.channel import SocketInfo
from server.channel_server import ChannelServer
from server.codec import Frame
from server.errors import ProtocolError
from server.outbox import Outbox, SendFunction
from server.protocol import JoinRequested, LeaveRequested, PushReceived, SocketProtocol

if TYPE_CHECKING:
    from server.endpoint import Endpoint

logger = logging.getLogger("switchboard.socket")

# Close codes. phoenix.js reconnects on anything but 1000, so we never use 1000.
GOING_AWAY = 1001  # disconnect broadcast, drain, idle
TRY_AGAIN_LATER = 1013  # slow consumer


class Socket:
    def __init__(
        self,
        endpoint: Endpoint,
        info: SocketInfo,
        send: SendFunction,
        close_transport: Callable[[int, str], None],
    ) -> None:
        self.endpoint = endpoint
        self.info = info
        settings = endpoint.settings
        self.protocol = SocketProtocol(
            endpoint.router.matches,
            max_channels=settings.max_channels,
            max_frame_size=settings.max_frame_size,
        )
        self.outbox = Outbox(send, settings.outbox_limit, self._overflowed, self._send_failed)
        self.channels: dict[str, ChannelServer] = {}
        self.closed = False
        self.close_code: int | None = None
        self.last_seen = time.monotonic()
        self._close_transport = close_transport

    def __repr__(self) -> str:
        return f"<Socket {self.info.id} user={self.info.user_id}>"

    # -- inbound ---------------------------------------------------------------------------

    def receive(self, data: Frame) -> None:
        if self.closed:
            return
        self.last_seen = time.monotonic()
        try:
            self.protocol.receive(data)
        except ProtocolError as exc:
            logger.warning("closing socket %s: %s", self.info.id, exc)
            self.flush()
            self.close(exc.code, exc.reason)
            return
        for event in self.protocol.events_received():
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
                    self.protocol.left(event.topic, event.join_ref, event.ref)
        self.flush()

    def _join(self, event: JoinRequested) -> None:
        if event.replaces is not None:
            old = self.channels.pop(event.topic, None)
            if old is not None:
                old.shutdown("duplicate_join")
        channel_class = self.endpoint.router.match(event.topic)
        assert channel_class is not None  # the protocol only emits joins for routed topics
        server = ChannelServer(self, channel_class, event.topic, event.join_ref)
        self.channels[event.topic] = server
        server.post_join(event.payload, event.ref)

    def channel_joined(self, server: ChannelServer) -> None:
        self.endpoint.channel_joined(self, server)

    def channel_stopped(self, server: ChannelServer, was_joined: bool) -> None:
        if self.channels.get(server.topic) is server:
            del self.channels[server.topic]
        if was_joined:
            self.endpoint.channel_left(self, server)

    # -- outbound --------------------------------------------------------------------------

    def flush(self) -> None:
        for frame in self.protocol.data_to_send():
            self.outbox.put(frame)

    def _overflowed(self) -> None:
        logger.warning(
            "closing socket %s (user %s): slow consumer, outbound queue over %d bytes",
            self.info.id,
            self.info.user_id,
            self.outbox.limit,
        )
        self.endpoint.slow_consumers += 1
        self.close(TRY_AGAIN_LATER, "slow consumer")

    def _send_failed(self, exc: BaseException) -> None:
        logger.debug("socket %s: write failed (%r); client gone", self.info.id, exc)
        self.connection_lost()

    # -- closing ---------------------------------------------------------------------------

    def close(self, code: int = GOING_AWAY, reason: str = "") -> None:
        """Close from the server side with ``code`` (never 1000: clients must come back)."""
        if self.closed:
            return
        self.close_code = code
        self._end(f"closed: {reason or code}")
        self._close_transport(code, reason)

    def connection_lost(self) -> None:
        """The client went away (or its transport failed)."""
        if not self.closed:
            self._end("disconnected")
            self._close_transport(GOING_AWAY, "")

    def _end(self, reason: str) -> None:
        self.closed = True
        for server in list(self.channels.values()):
            server.shutdown(reason)
        self.outbox.close()
        self.endpoint.socket_closed(self)
