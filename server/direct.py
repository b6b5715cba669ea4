"""Fast paths on uvicorn's websockets-sansio protocol, off the ASGI call chain.

The ASGI path costs, per frame, a queue hand-off, a task wake-up and four coroutine layers
each way (Starlette, its exception wrapper, uvicorn, the WebSocket state machine), and
uvicorn pauses reading after every frame it hands over and resumes on the next
``receive()``: two epoll changes per frame. Where the server is uvicorn's
websockets-sansio protocol, we go around it:

- :class:`DirectWriter` writes whole frames straight to the TCP transport (not with
  compression negotiated); a broadcast's frame bytes are built once and written to every
  subscriber.
- :class:`DirectReader` stands in for the protocol's receive queue and hands each frame to
  the socket as uvicorn's parser produces it, at most :data:`BATCH` frames per socket per
  loop iteration, so one client's backlog never holds the others up. It answers pings
  too: a ping counts toward the socket's rate limits like any frame, and a client that
  does not read its pongs is dropped like any slow consumer.

Each is chosen per connection after checking every attribute it uses (uvicorn >= 0.53);
:func:`refusal` says why not otherwise, and then the ASGI path does that part. We also keep
uvicorn's TCP transport, to reset a connection whose client does not read.
"""

from __future__ import annotations

import asyncio
import contextvars
import fcntl
import socket as pysocket
import struct
import termios
from collections import deque
from collections.abc import Callable
from typing import Any

from switchboard.server.codec import Frame

TRANSPORT_KEY = "switchboard.transport"
PROTOCOL_KEY = "switchboard.protocol"

PONG = 0x8A  # first byte of a server's pong frame: FIN, opcode 0xA (control frames: no RSV)

#: Frames one socket may have handled in one loop iteration; the rest wait for the next
#: ones, its reading paused meanwhile.
BATCH = 64


def capture_server_protocol(scope: Any, receive: Any, send: Any) -> None:
    """Keep the server's protocol and TCP transport in ``scope`` if we can reach them: the
    ASGI callables are its bound methods (uvicorn); middleware may have wrapped ``send``
    but seldom ``receive``."""
    if PROTOCOL_KEY in scope:
        return
    for callable_ in (send, receive):
        protocol = getattr(callable_, "__self__", None)
        transport = getattr(protocol, "transport", None)
        if transport is not None and hasattr(transport, "abort"):
            scope[TRANSPORT_KEY] = transport
            scope[PROTOCOL_KEY] = protocol
            return


# -- choosing ----------------------------------------------------------------------------

_TRANSPORT_METHODS = ("write", "is_closing", "get_write_buffer_size", "abort", "get_extra_info")


def refusal(protocol: Any, *, reading: bool = False) -> str | None:
    """Why :class:`DirectWriter` (or, with ``reading``, :class:`DirectReader`) cannot run on
    ``protocol``; None if it can."""
    if protocol is None:
        return "the server's protocol is out of reach"
    name = type(protocol).__name__
    transport = getattr(protocol, "transport", None)
    methods = _TRANSPORT_METHODS + (("pause_reading", "resume_reading") if reading else ())
    missing = [method for method in methods if not hasattr(transport, method)]
    if missing:
        return f"its transport lacks {', '.join(missing)}"
    attributes = [("close_sent", bool), ("disconnected", bool), ("writable", asyncio.Event)]
    if reading:
        attributes += [("queue", asyncio.Queue), ("read_paused", bool)]
        if not callable(getattr(protocol, "handle_ping", None)):
            return f"{name} has no handle_ping"
    for attribute, kind in attributes:
        if not isinstance(getattr(protocol, attribute, None), kind):
            return f"{name}.{attribute} is not a {kind.__name__} (uvicorn < 0.53?)"
    conn: Any = getattr(protocol, "conn", None)
    if not (
        hasattr(conn, "state")
        and hasattr(conn, "data_to_send")
        and isinstance(getattr(conn, "extensions", None), list)
    ):
        return f"{name}.conn is not a websockets protocol"
    if conn.extensions and not reading:
        return "a WebSocket extension (compression) is negotiated"
    return None


# -- writing -----------------------------------------------------------------------------

_last_frame: list[Any] = [None, b""]  # (frame, its WebSocket encoding): one broadcast, N writes


def ws_frame(frame: Frame) -> bytes:
    """The unmasked server-to-client WebSocket frame (FIN, text or binary) for ``frame``."""
    if frame is _last_frame[0]:
        return _last_frame[1]  # type: ignore[no-any-return]
    if type(frame) is str:
        payload, opcode = frame.encode(), 0x81
    else:
        payload, opcode = frame, 0x82  # type: ignore[assignment]
    size = len(payload)
    if size < 126:
        header = bytes((opcode, size))
    elif size < 65536:
        header = bytes((opcode, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((opcode, 127)) + size.to_bytes(8, "big")
    wire = header + payload
    _last_frame[0], _last_frame[1] = frame, wire
    return wire


class DirectWriter:
    """Writes whole frames straight to the TCP transport, bypassing the ASGI send chain.

    A frame is written only while the connection is open and its transport not paused;
    otherwise the outbox queues it and the ASGI path sends it once the transport drains.
    """

    __slots__ = ("protocol", "transport", "writable", "conn", "open_state")

    def __init__(self, protocol: Any) -> None:
        from websockets.protocol import State

        self.protocol = protocol
        self.transport = protocol.transport
        self.writable = protocol.writable
        self.conn = protocol.conn
        self.open_state = State.OPEN

    def try_write(self, frame: Frame) -> bool:
        if not self.writable.is_set():
            return False  # paused: the slow path waits for it to drain
        protocol = self.protocol
        # The transport knows of a lost connection before uvicorn's connection_lost runs;
        # writing on meanwhile makes asyncio warn once per frame.
        if (
            protocol.close_sent
            or protocol.disconnected
            or self.transport.is_closing()
            or self.conn.state is not self.open_state
        ):
            raise ConnectionResetError("connection is closing")
        self.transport.write(ws_frame(frame))
        return True


# -- reading -----------------------------------------------------------------------------


class _Iterations:
    """Counts the event loop's iterations in which frames arrived: one callback per such
    iteration for the whole process, however many sockets receive in it."""

    __slots__ = ("count", "_loop", "_armed")

    def __init__(self) -> None:
        self.count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._armed = False

    def current(self, loop: asyncio.AbstractEventLoop) -> int:
        if not self._armed or loop is not self._loop:
            self._loop, self._armed = loop, True
            loop.call_soon(self._next)
        return self.count

    def _next(self) -> None:
        self.count += 1
        self._armed = False


_iterations = _Iterations()


class DirectReader:
    """Stands in for uvicorn's receive queue once the socket is open: each frame goes to
    ``receive`` as uvicorn's parser hands it over, in the socket's own context (its log
    fields); an exception ends the connection as it would on the ASGI path.

    uvicorn pauses reading after putting a frame in its queue unless ``read_paused`` is
    set, and resumes on the next ``receive()``; we keep the flag set (nobody calls
    ``receive()`` any more) and pause reading ourselves only while a socket that sent more
    than :data:`BATCH` frames in one loop iteration works through the rest in later ones.

    A ping's pong (queued by websockets) goes out only if ``on_ping``, told how many bytes
    would then wait for the client, allows it.
    """

    __slots__ = (
        "protocol",
        "transport",
        "loop",
        "ended",
        "error",
        "_receive",
        "_on_ping",
        "_queued",
        "_context",
        "_iteration",
        "_handled",
        "_paused",
        "_backlog",
    )

    def __init__(
        self,
        protocol: Any,
        receive: Callable[[Frame], None],
        on_ping: Callable[[int], bool] | None = None,
    ) -> None:
        self.protocol = protocol
        self.transport = protocol.transport
        self.loop = asyncio.get_running_loop()
        #: Done once the connection ends (the client closed, we closed, it was lost).
        self.ended: asyncio.Future[None] = self.loop.create_future()
        self.error: BaseException | None = None
        self._receive = receive
        self._on_ping = on_ping
        self._queued: deque[bytes] | None = None  # made at the first ping
        self._context = contextvars.copy_context()
        self._iteration = -1
        self._handled = 0
        self._paused = False
        self._backlog: deque[Frame] | None = None

    def install(self) -> None:
        """Take over from uvicorn's queue; frames already queued are handled first, in order."""
        protocol = self.protocol
        queued, protocol.queue = protocol.queue, self
        was_paused, protocol.read_paused = protocol.read_paused, True
        protocol.handle_ping = self._handle_ping
        while not queued.empty():
            self.put_nowait(queued.get_nowait())
        cut_frames = getattr(protocol, "cut_frames", None)
        if cut_frames is not None and _parser_idle(protocol.conn):
            cut_frames(self.frame)
        if was_paused and not self._paused and not self.transport.is_closing():
            self.transport.resume_reading()

    # uvicorn calls these two on its queue.
    def put_nowait(self, message: dict[str, Any]) -> None:
        if message["type"] != "websocket.receive":  # websocket.disconnect
            if not self.ended.done():
                self.ended.set_result(None)
            return
        data = message.get("text")
        if data is None:
            data = message["bytes"]
        self.frame(data)

    def frame(self, data: Frame) -> bool:
        """One whole message from the client; True while the protocol takes more (after it
        sent its close, uvicorn drops them)."""
        if self._backlog is not None:
            self._backlog.append(data)
        elif self._over_budget():
            self._backlog = deque((data,))
        else:
            self._handle(data)
        return not self.protocol.close_sent

    def empty(self) -> bool:
        return True

    def _over_budget(self) -> bool:
        """Count a frame; True once this socket had its :data:`BATCH` in this loop
        iteration. Reading then pauses until the next one (else libuv goes on reading the
        same socket, up to 32 reads in one go)."""
        iteration = _iterations.current(self.loop)
        if iteration != self._iteration:
            self._iteration, self._handled = iteration, 0
        self._handled += 1
        if self._handled <= BATCH:
            return False
        if not self._paused:
            self._paused = True
            self.transport.pause_reading()
            self.loop.call_soon(self._next_batch)
        return True

    def _handle(self, data: Frame) -> None:
        if self.ended.done():
            return
        try:
            self._context.run(self._receive, data)
        except Exception as exc:  # a bug: end this connection as the ASGI path would
            self.error = exc
            if not self.ended.done():
                self.ended.set_result(None)
        # A close sent meanwhile cleared the flag (and resumed reading, for the client's
        # close frame); uvicorn would pause reading again as soon as we return.
        self.protocol.read_paused = True

    def _next_batch(self) -> None:
        """A later loop iteration: the next batch of the backlog; once it is all handled,
        reading resumes."""
        backlog = self._backlog
        if backlog:
            for _ in range(BATCH):
                if not backlog:
                    break
                self._handle(backlog.popleft())
            if backlog and not self.ended.done():
                self.loop.call_soon(self._next_batch)
                return
        self._backlog = None
        self._paused = False
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def _handle_ping(self) -> None:
        """uvicorn's ``handle_ping``, called once per ping frame after websockets parsed a
        whole read and queued a pong for every ping in it: this call answers the oldest."""
        if self._queued is None:
            self._queued = deque()
        queued = self._queued
        queued.extend(self.protocol.conn.data_to_send())
        self._over_budget()  # its pong is decided now; only further reading waits
        self._write_until_pong(queued)
        if not queued:
            return
        pong = queued.popleft()
        if not self.ended.done():
            unsent = self.transport.get_write_buffer_size() + len(pong)
            if self._on_ping is None or self._context.run(self._on_ping, unsent):
                self.transport.write(pong)
        self._write_until_pong(queued)  # say, the reply to a close frame after the ping

    def _write_until_pong(self, queued: deque[bytes]) -> None:
        """Write the frames websockets queued (one per item) up to the next pong."""
        while queued and queued[0][0] != PONG:
            data = queued.popleft()
            if not self.transport.is_closing():
                self.transport.write(data)


# -- resetting ---------------------------------------------------------------------------


def kernel_unsent(transport: Any) -> int:
    """Bytes in the socket's send queue that the peer has not acknowledged (0 if unknown)."""
    sock = transport.get_extra_info("socket")
    if sock is None or not hasattr(termios, "TIOCOUTQ"):
        return 0
    try:
        buffer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", buffer)[0])


def reset(transport: Any) -> None:
    """Abort with a TCP reset: with SO_LINGER 0 the kernel drops the unsent data at once,
    where a plain close would keep the socket (and its buffers) to flush into a zero window."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


def release_handshake(protocol: Any) -> None:
    """Let go of the handshake's request and response (all their headers, some KiB), which
    only the handshake uses: uvicorn keeps both for the connection's life, and websockets'
    parser generator keeps the request in its frame. The parser is replaced by a fresh one
    only while it waits for the first byte of a frame (nothing of one has arrived)."""
    if protocol is None or not getattr(protocol, "handshake_complete", False):
        return
    for name in ("request", "response"):
        if getattr(protocol, name, None) is not None:
            setattr(protocol, name, None)
    conn: Any = getattr(protocol, "conn", None)
    parser: Any = getattr(conn, "parser", None)
    if callable(getattr(conn, "parse", None)) and _between_frames(parser):
        fresh = conn.parse()
        next(fresh)  # to its first wait for data, as websockets primes its own
        parser.close()
        conn.parser = fresh


def _parser_idle(conn: Any) -> bool:
    """Whether websockets' parser holds nothing of the client's stream (no compression, no
    fragmented message, no buffered bytes, waiting for a new frame): from here frames can
    be cut off the stream before it (see :mod:`frame_cutter`)."""
    reader = getattr(conn, "reader", None)
    return (
        not getattr(conn, "extensions", True)
        and getattr(conn, "current_size", 0) is None
        and hasattr(conn, "max_message_size")
        and not getattr(reader, "buffer", True)
        and _between_frames(getattr(conn, "parser", None))
    )


def _between_frames(parser: Any) -> bool:
    """Whether websockets' parser waits for a new frame: the innermost generator it is
    suspended in is the reader's ``at_eof``, which it asks before each frame."""
    innermost = parser
    while getattr(innermost, "gi_yieldfrom", None) is not None:
        innermost = innermost.gi_yieldfrom
    code = getattr(innermost, "gi_code", None)
    return innermost is not parser and getattr(code, "co_name", "") == "at_eof"
