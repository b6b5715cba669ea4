"""What a TCP connection may cost before it is a request: guards around uvicorn's protocols.

uvicorn parses a request once its head has arrived and gives the app a WebSocket once its
handshake has. Until then a connection costs a file descriptor and buffers for as long as the
client likes: idle connections, requests sent a byte a second, request lines of megabytes.
With the descriptors gone, ``accept()`` fails for everyone. Here:

- **a deadline**: ``request_timeout`` seconds from connecting (or from the end of the previous
  response) for a request's head and body to arrive, or for a WebSocket handshake to complete.
  Past it the connection is closed, with a 408 if part of a request had come.
- **a head size**: request line and headers together at most ``max_request_head`` bytes;
  beyond, 414 (still in the request line) or 431, and the connection is closed.
- **connection caps**: per client address and in total, answered at once, before anything is
  read: 429 and 503 with ``Retry-After``. The total defaults to the descriptor limit minus a
  reserve. A trusted proxy's connections count by the address in ``X-Forwarded-For`` when
  they become WebSockets (a proxy's plain HTTP connections carry many clients' requests).
- **accept errors** (descriptors exhausted all the same) logged once per interval with a count.
- **the descriptor limit** raised to the hard limit at start.

uvicorn offers the parts it has: ``h11_max_incomplete_event_size`` bounds h11's buffer (httptools
has no such bound, hence our own count), ``timeout_keep_alive`` closes idle keep-alive
connections *between* requests. Its ``limit_concurrency`` counts only once a request's head
is in, too late for a connection that never sends one.
"""

from __future__ import annotations

import asyncio
import errno
import http
import importlib.util
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from switchboard.server.client_ip import client_ip, is_trusted
from switchboard.server.codec import Frame
from switchboard.server.frame_cutter import FrameCutter

if TYPE_CHECKING:
    from switchboard.server.config import Settings

logger = logging.getLogger("switchboard.guard")

#: Descriptors kept for everything that is not a client connection (listeners, Redis, logs).
FD_RESERVE_MIN = 32
#: The kernel's queue of connections not yet accepted.
LISTEN_BACKLOG = 2048
ACCEPT_LOG_INTERVAL = 10.0
#: Errors of ``accept()`` that say the process or the system ran out of something.
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass(frozen=True)
class FdLimit:
    soft: int
    hard: int
    was: int


def raise_fd_limit() -> FdLimit:
    """Raise the soft limit on open files to the hard limit (where the system allows it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning(
                "could not raise the open-file limit from %d to %d: %s", soft, target, exc
            )
        else:
            return FdLimit(target, hard, soft)
    return FdLimit(soft, hard, soft)


def response(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete ``Connection: close`` response with a JSON ``{"error": message}`` body."""
    body = orjson.dumps({"error": message})
    lines = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


#: The refusals at connect, the same bytes each time.
AT_CONNECTION_LIMIT = response(503, "server at its connection limit", (("retry-after", "5"),))
TOO_MANY_FROM_ADDRESS = response(
    429, "too many connections from your address", (("retry-after", "5"),)
)


@dataclass
class ConnectionGuard:
    """Counts open connections per client address and in total, and decides on new ones."""

    request_timeout: float
    max_request_head: int
    max_connections: int
    #: 0: no cap per address (``SWITCHBOARD_LIMITS=off``).
    max_per_address: int
    trusted_proxies: tuple[str, ...] = ()
    #: Refusals and closes so far, by reason (for /metrics).
    refused: dict[str, int] = field(default_factory=dict)
    accept_errors: int = 0
    _open: dict[Any, tuple[str, ...]] = field(default_factory=dict)
    _per_address: dict[str, int] = field(default_factory=dict)
    _accept_logged_at: float | None = None
    _accept_unlogged: int = 0

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def count(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def admit(self, transport: Any) -> bytes | None:
        """Register a new connection, or return the response that refuses it."""
        if len(self._open) >= self.max_connections:
            self.count("max_connections")
            return AT_CONNECTION_LIMIT
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else None
        if (
            address is not None
            and self.max_per_address
            and not is_trusted(address, self.trusted_proxies)
        ):
            if not self._claim(address):
                return TOO_MANY_FROM_ADDRESS
            self._open[transport] = (address,)
        else:
            self._open[transport] = ()
        return None

    def admit_forwarded(self, transport: Any, address: str) -> bool:
        """A trusted proxy's connection is becoming a WebSocket for ``address``."""
        if not self.max_per_address or transport not in self._open:
            return True
        if not self._claim(address):
            return False
        self._open[transport] += (address,)
        return True

    def _claim(self, address: str) -> bool:
        """Count one more connection of ``address``, unless it is at the cap."""
        open_here = self._per_address.get(address, 0)
        if open_here >= self.max_per_address:
            self.count("max_connections_per_address")
            return False
        self._per_address[address] = open_here + 1
        return True

    def release(self, transport: Any) -> None:
        for address in self._open.pop(transport, ()):
            left = self._per_address[address] - 1
            if left:
                self._per_address[address] = left
            else:
                del self._per_address[address]

    def exception_handler(
        self, default: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]
    ) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
        """A loop exception handler that logs failing ``accept()`` calls once per interval.

        asyncio logs each one with a traceback, and (Python 3.11) retries up to the listen
        backlog's length of times per attempt: thousands of lines a second while the
        descriptors are gone."""

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            if not (
                isinstance(exc, OSError)
                and exc.errno in _RESOURCE_ERRORS
                and "accept" in str(context.get("message", ""))
            ):
                default(loop, context)
                return
            self.accept_errors += 1
            self._accept_unlogged += 1
            now = loop.time()
            if self._accept_logged_at is None or now - self._accept_logged_at >= (
                ACCEPT_LOG_INTERVAL
            ):
                soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
                logger.error(
                    "accept() failed %d times since the last report: %s (open connections %d, "
                    "open-file limit %d); new clients wait or fail meanwhile",
                    self._accept_unlogged,
                    exc.strerror,
                    len(self._open),
                    soft,
                    extra={"event": "accept_errors", "count": self._accept_unlogged},
                )
                self._accept_logged_at = now
                self._accept_unlogged = 0

        return handle


class _GuardedHttp:
    """Mixed into uvicorn's HTTP protocol classes (h11, httptools); see the module doc."""

    guard: ConnectionGuard
    # Provided by the uvicorn protocol this is mixed into:
    transport: Any
    loop: asyncio.AbstractEventLoop
    cycle: Any

    _admitted = False  # uvicorn's protocol knows of the connection
    _done = False  # answered by the guard: nothing more goes to the parser
    _deadline: asyncio.TimerHandle | None = None
    _in_head = True
    _head_bytes = 0
    _line_done = False
    _tail = b""

    def connection_made(self, transport: Any) -> None:
        refusal = self.guard.admit(transport)
        if refusal is not None:
            self._done = True
            self.transport = transport
            transport.write(refusal)
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.release(self.transport)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._admitted:
            super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        if self._in_head and not self._measure_head(data):
            return
        super().data_received(data)  # type: ignore[misc]

    def handle_websocket_upgrade(self, *args: Any) -> None:
        # From here the WebSocket protocol keeps the handshake's deadline; ours would keep
        # this protocol (its parser, the request's headers) alive as long.
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().handle_websocket_upgrade(*args)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if self.transport.is_closing():
            return
        if not self.cycle.more_body:  # else the rest of an unread body (413) is still to come
            self._in_head, self._head_bytes, self._line_done, self._tail = True, 0, False, b""
        self._arm()

    def _measure_head(self, data: bytes) -> bool:
        """Count the request head in ``data``; False if it is too large (answered, closing)."""
        limit = self.guard.max_request_head
        if not self._head_bytes and data.find(b"\r\n\r\n", 0, limit) >= 0:
            self._in_head = False  # the usual case: all of a head that fits, in one read
            return True
        seen = self._tail + data
        end = seen.find(b"\r\n\r\n")
        size = self._head_bytes + (len(data) if end < 0 else end + 4 - len(self._tail))
        if not self._line_done:
            newline = data.find(b"\n", 0, limit - self._head_bytes + 1)
            self._line_done = newline >= 0
        if size > limit:
            status = 431 if self._line_done else 414  # headers, or the request line alone
            self.guard.count("request_head_too_large")
            self._close_with(response(status, f"request line and headers over {limit} bytes"))
            return False
        if end < 0:
            self._head_bytes, self._tail = size, seen[-3:]
        else:
            self._in_head = False
        return True

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.guard.request_timeout, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        transport = self.transport
        if transport.is_closing() or transport.get_protocol() is not self:
            return
        cycle = self.cycle
        if cycle is not None and not cycle.more_body and not cycle.response_complete:
            return  # the whole request is in and the app is on it; re-armed when it answers
        self.guard.count("request_timeout")
        started = self._head_bytes or self._tail or not self._in_head
        if started and (cycle is None or cycle.response_complete or not cycle.response_started):
            self._close_with(response(408, "request not complete in time"))
        else:
            transport.close()

    def _close_with(self, answer: bytes) -> None:
        self._done = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's answer, if any, goes nowhere
        self.transport.write(answer)
        self.transport.close()


#: What an app sends to answer a WebSocket handshake: accept it, or refuse it.
_ANSWERS = frozenset({"websocket.accept", "websocket.close", "websocket.http.response.start"})


class _GuardedWebSocket:
    """Mixed into uvicorn's websockets-sansio protocol."""

    guard: ConnectionGuard
    # Provided by uvicorn's protocol:
    transport: Any
    loop: asyncio.AbstractEventLoop
    conn: Any
    client: tuple[str, int] | None
    handshake_complete: bool
    initial_response: Any
    close_sent: bool
    close_timeout: float
    close_timer: asyncio.TimerHandle | None
    queue: asyncio.Queue[Any]
    read_paused: bool
    _discarding = False
    _deadline: asyncio.TimerHandle | None = None
    _cutter: FrameCutter | None = None
    _deliver: Callable[[Frame], bool]

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.release(self.transport)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)  # type: ignore[misc]

    def handle_connect(self, event: Any) -> None:
        peer = self.client[0] if self.client else None
        trusted = self.guard.trusted_proxies
        if peer is not None and is_trusted(peer, trusted):
            forwarded = [
                (b"x-forwarded-for", value.encode("latin-1"))
                for value in event.headers.get_all("X-Forwarded-For")
            ]
            address = client_ip({"client": self.client, "headers": forwarded}, trusted)
            if not self.guard.admit_forwarded(self.transport, address):
                self.handshake_complete = self.close_sent = True
                self.transport.write(TOO_MANY_FROM_ADDRESS)
                self.transport.close()
                return
        super().handle_connect(event)  # type: ignore[misc]
        if not self.handshake_complete:  # the app has the rest of the request's time to answer
            timeout = self.guard.request_timeout
            self._deadline = self.loop.call_later(timeout, self._handshake_expired)

    def _handshake_expired(self) -> None:
        self._deadline = None
        if not self.handshake_complete and not self.transport.is_closing():
            self.guard.count("request_timeout")
            self.transport.close()

    def send(self, message: Any) -> Any:
        if self._deadline is not None and message["type"] in _ANSWERS:
            self._deadline.cancel()
            self._deadline = None
        # A denial response (HTTP 429/503 instead of the upgrade) completes the handshake as
        # much as an accept does; uvicorn would log "ASGI callable returned without
        # completing handshake" as an error for every one.
        if (
            message["type"] == "websocket.http.response.body"
            and not message.get("more_body")
            and self.initial_response is not None
        ):
            self.handshake_complete = True
        return super().send(message)  # type: ignore[misc]

    def cut_frames(self, deliver: Callable[[Frame], bool]) -> None:
        """From now on cut the client's data frames off the stream here, each to ``deliver``
        (see :mod:`frame_cutter`); the direct reader asks once websockets' parser is idle."""
        self._cutter = FrameCutter(self.conn.max_message_size)
        self._deliver = deliver

    def data_received(self, data: bytes) -> None:
        cutter = self._cutter
        if cutter is not None:
            rest = (
                cutter.rest(data)
                if self.close_sent
                else cutter.feed(data, self._deliver, self._control)
            )
            if rest is None:
                return
            self._cutter = None
            if not rest:
                return
            data = rest
        if self._discarding:
            self.conn.receive_data(data)  # dropped, but for the client's close frame
            self._send_closing()
            return
        super().data_received(data)  # type: ignore[misc]

    def _control(self, frame: bytes) -> bool:
        """A ping or pong cut off the stream: websockets parses it alone (and queues the
        pong); cutting goes on while the connection is fine."""
        super().data_received(frame)  # type: ignore[misc]
        return not self.close_sent and self.conn.parser_exc is None

    def handle_parser_exception(self) -> None:
        """A frame over the size limit (or another protocol error): send the close frame
        (1009 for the size), then keep reading and dropping what the client still sends
        until it closes or ``close_timeout`` passes. uvicorn closes at once, and closing a
        socket with unread data makes the kernel send a reset, which can reach the client
        before it has read the close frame."""
        close = self.conn.close_sent
        code, reason = (close.code, close.reason) if close is not None else (1002, "")
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.close_sent = True
        self._discarding = True
        self._send_closing()
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        if self.close_timer is None:
            self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)

    def _send_closing(self) -> None:
        output = self.conn.data_to_send()
        data = b"".join(output)
        if data:
            self.transport.write(data)
        if not output or output[-1] != b"":
            return
        # websockets' end-of-data marker: the server ends the TCP connection first. If the
        # client has not said it is done (its close frame), it may still be sending: only
        # stop writing, and read on until it closes too.
        if self.conn.close_rcvd is None and self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()


def accept_batch(fds: FdLimit) -> int:
    """How many connections asyncio may accept at once, before any is refused.

    asyncio accepts up to its ``backlog`` argument's number of connections per readiness of
    the listener, and protocols see them only afterwards: a burst takes that many descriptors
    before the cap can refuse one. With few descriptors the batch must be small."""
    return max(16, min(LISTEN_BACKLOG, fds.soft // 8))


def guard_for(settings: Settings, fds: FdLimit) -> ConnectionGuard:
    """The guard ``settings`` ask for, its total cap derived from ``fds`` unless set: the
    limit less a reserve for everything else and for two accept batches in flight."""
    reserve = max(FD_RESERVE_MIN, fds.soft // 10) + 2 * accept_batch(fds)
    total = settings.max_connections or max(1, fds.soft - reserve)
    return ConnectionGuard(
        request_timeout=settings.request_timeout,
        max_request_head=settings.max_request_head,
        max_connections=total,
        max_per_address=settings.max_connections_per_ip if settings.limits else 0,
        trusted_proxies=settings.trusted_proxies,
    )


def http_parser(settings: Settings) -> str:
    """``h11`` or ``httptools``: what ``SWITCHBOARD_HTTP_PARSER`` asks for, or has."""
    if settings.http_parser != "auto":
        return settings.http_parser
    return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"


def protocols(guard: ConnectionGuard, http: str) -> tuple[type[asyncio.Protocol], type[Any]]:
    """uvicorn's HTTP protocol (``h11`` or ``httptools``) and websockets-sansio protocol,
    both guarded by ``guard``."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    base: type[asyncio.Protocol]
    if http == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    elif http == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol
    else:
        raise RuntimeError(f"no guarded HTTP protocol for {http!r}; use h11 or httptools")
    http_class = type(f"Guarded{base.__name__}", (_GuardedHttp, base), {"guard": guard})
    ws_class = type(
        "GuardedWebSocketsSansIOProtocol",
        (_GuardedWebSocket, WebSocketsSansIOProtocol),
        {"guard": guard},
    )
    return http_class, ws_class
