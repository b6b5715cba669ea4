"""The load generator's WebSocket transport: bytes in and out, no Phoenix in it.

Why not ``switchboard.client`` (websockets underneath): the fan-out scenario opens
thousands of connections from one process on one core and then hands their file
descriptors to ``pump.c``, which reads every broadcast without Python in the way.
A websockets connection owns its socket (its reader task would race the pump) and
costs a task, a queue and UTF-8 validation per message; this transport costs one
``asyncio.Protocol`` and can give its socket away (``detach``). What goes over it
is built by the flavors (``flavors.py``); Phoenix frames by
:class:`switchboard.client.Session`, the one Python Phoenix client's sans-I/O core.

One ``asyncio.Protocol`` per connection: an HTTP/1.1 upgrade, then a frame
parser that walks the received bytes and hands every complete text message to
``on_message(client, payload, now)``. ``now`` is one ``perf_counter()`` taken per
``data_received`` call, so all frames that arrived together share a timestamp.
It skips what a load generator does not need (no compression extension is
offered, no UTF-8 validation, no close handshake on our side). Outgoing frames
are masked as RFC 6455 requires.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import select
from collections.abc import Callable
from time import perf_counter
from typing import Any

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def _mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if n == 0:
        return data
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + key + _mask(payload, key)


class HandshakeError(Exception):
    pass


OnMessage = Callable[["WSClient", bytes, float], None]


class WSClient(asyncio.Protocol):
    """One client connection. ``opened`` resolves after the 101 response."""

    reads = 0  # data_received calls, all clients together (a cheap diagnostic)

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        on_message: OnMessage,
        ident: int = 0,
        topic: str = "",
    ):
        self.host = host
        self.port = port
        self.path = path
        self.on_message = on_message
        self.ident = ident
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.is_open = False
        self.closed = False
        self.on_lost: Callable[[WSClient], None] | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.joined: asyncio.Future[None] = loop.create_future()
        self.frag: list[bytes] | None = None
        self.frag_text = False
        # free slots for the application protocol on top (room, refs, pending replies)
        self.topic = topic
        self.ref = 1
        self.pending: asyncio.Future[float] | None = None
        self.pending_tag: bytes = b""
        self.session: Any = None  # the flavor's protocol state (a Phoenix Session)
        self._key = base64.b64encode(os.urandom(16))
        self.fd = -1  # set by detach(): the socket is then read by someone else's epoll

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(
            b"GET " + self.path.encode() + b" HTTP/1.1\r\n"
            b"Host: " + f"{self.host}:{self.port}".encode() + b"\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + self._key + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.is_open = False
        err = ConnectionError(f"connection lost: {exc!r}")
        for fut in (self.opened, self.joined, self.pending):
            if fut is not None and not fut.done():
                fut.set_exception(err)
                fut.exception()  # mark retrieved; the awaiting side re-raises
        if self.on_lost is not None:
            self.on_lost(self)

    def data_received(self, data: bytes) -> None:
        WSClient.reads += 1
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.is_open:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            self._handshake(data[:end])
            data = data[end + 4 :]
            if not data:
                return
        now = perf_counter()
        on_message = self.on_message
        n = len(data)
        i = 0
        while n - i >= 2:
            b0 = data[i]
            ln = data[i + 1] & 0x7F
            if ln < 126:
                h = 2
            elif ln == 126:
                if n - i < 4:
                    break
                ln = (data[i + 2] << 8) | data[i + 3]
                h = 4
            else:
                if n - i < 10:
                    break
                ln = int.from_bytes(data[i + 2 : i + 10], "big")
                h = 10
            end = i + h + ln
            if end > n:
                break
            if b0 == 0x81:  # FIN + text, the hot path
                on_message(self, data[i + h : end], now)
            else:
                self._other(b0, data[i + h : end], now)
            i = end
        if i < n:
            self.buf = data[i:]

    # -- helpers ------------------------------------------------------------
    def _handshake(self, head: bytes) -> None:
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            self.opened.set_exception(HandshakeError(status.decode(errors="replace")))
            self.opened.exception()
            assert self.transport is not None
            self.transport.close()
            return
        accept = base64.b64encode(hashlib.sha1(self._key + GUID).digest())
        if accept not in head:
            self.opened.set_exception(HandshakeError("bad Sec-WebSocket-Accept"))
            self.opened.exception()
            assert self.transport is not None
            self.transport.close()
            return
        self.is_open = True
        self.opened.set_result(None)

    def _other(self, b0: int, payload: bytes, now: float) -> None:
        op = b0 & 0x0F
        fin = b0 & 0x80
        if op == OP_PING:
            self.send_frame(OP_PONG, payload)
        elif op == OP_CLOSE:
            if self.transport is not None:
                self.transport.close()
        elif op in (OP_TEXT, OP_BINARY):
            self.frag = [payload]
            self.frag_text = op == OP_TEXT
        elif op == OP_CONT and self.frag is not None:
            self.frag.append(payload)
            if fin:
                msg = b"".join(self.frag)
                self.frag = None
                if self.frag_text:
                    self.on_message(self, msg, now)

    def send_frame(self, opcode: int, payload: bytes) -> None:
        if self.closed or self.transport is None:
            return
        if self.fd >= 0:
            write_all(self.fd, encode_frame(opcode, payload))
        else:
            self.transport.write(encode_frame(opcode, payload))

    def send_text(self, payload: bytes) -> None:
        self.send_frame(OP_TEXT, payload)

    def detach(self) -> int:
        """Stop asyncio reading this socket; return its fd for a caller-driven loop.

        Bytes read from the fd must then be passed to ``feed`` (or parsed by the
        caller); writes go straight to the fd.
        """
        assert self.transport is not None
        self.transport.pause_reading()
        self.fd = self.transport.get_extra_info("socket").fileno()
        return self.fd

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()
            self.closed = True


def write_all(fd: int, data: bytes) -> None:
    """Write to a non-blocking fd, waiting for room if the kernel buffer is full."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


async def connect(
    host: str,
    port: int,
    path: str,
    on_message: OnMessage,
    ident: int = 0,
    topic: str = "",
    timeout: float = 15.0,
) -> WSClient:
    loop = asyncio.get_running_loop()
    client = WSClient(host, port, path, on_message, ident, topic)
    await asyncio.wait_for(loop.create_connection(lambda: client, host, port), timeout)
    await asyncio.wait_for(asyncio.shield(client.opened), timeout)
    return client
