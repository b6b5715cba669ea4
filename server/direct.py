"""A fast path on uvicorn's websockets-sansio protocol, off the ASGI call chain.

Four coroutine layers per frame (Starlette, its exception wrapper, uvicorn, the WebSocket
state machine) cost as much as the rest of a broadcast. Where the server is uvicorn's
websockets-sansio protocol with no extension (compression) negotiated,
:class:`DirectWriter` writes whole frames straight to the TCP transport; a broadcast's
frame bytes are built once and written to every subscriber.

It is chosen per connection after checking every attribute it uses (uvicorn >= 0.53);
:func:`refusal` says why not otherwise, and then the ASGI path does everything. We also
keep uvicorn's TCP transport, to reset a connection whose client does not read.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket as pysocket
import struct
import termios
from typing import Any

from switchboard.server.codec import Frame

TRANSPORT_KEY = "switchboard.transport"
PROTOCOL_KEY = "switchboard.protocol"


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


def refusal(protocol: Any) -> str | None:
    """Why :class:`DirectWriter` cannot write on ``protocol``; None if it can."""
    if protocol is None:
        return "the server's protocol is out of reach"
    name = type(protocol).__name__
    transport = getattr(protocol, "transport", None)
    missing = [method for method in _TRANSPORT_METHODS if not hasattr(transport, method)]
    if missing:
        return f"its transport lacks {', '.join(missing)}"
    for attribute, kind in (
        ("close_sent", bool),
        ("disconnected", bool),
        ("writable", asyncio.Event),
    ):
        if not isinstance(getattr(protocol, attribute, None), kind):
            return f"{name}.{attribute} is not a {kind.__name__} (uvicorn < 0.53?)"
    conn: Any = getattr(protocol, "conn", None)
    if not hasattr(conn, "state") or not isinstance(getattr(conn, "extensions", None), list):
        return f"{name}.conn is not a websockets protocol"
    if conn.extensions:
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
    """uvicorn keeps the handshake's request and response (with all their headers, ~3 KiB)
    for the connection's life though only the handshake uses them: let them go."""
    if protocol is not None and getattr(protocol, "handshake_complete", False):
        for name in ("request", "response"):
            if getattr(protocol, name, None) is not None:
                setattr(protocol, name, None)
