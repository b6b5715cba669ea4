"""Tests of server.direct: the frames it writes, and when it agrees to write them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from switchboard.server.direct import DirectWriter, refusal, ws_frame


def parsed(wire: bytes) -> tuple[Opcode, bytes]:
    """What a real client makes of ``wire``: the frame's opcode and payload."""
    client = ClientProtocol(parse_uri("ws://127.0.0.1/"), state=State.OPEN)
    client.receive_data(wire)
    [frame] = client.events_received()
    return frame.opcode, frame.data


@pytest.mark.parametrize(
    ("size", "header"), [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (70000, 10)]
)
def test_frame_headers_grow_at_126_and_65536_payload_bytes(size: int, header: int) -> None:
    for frame, opcode in (("t" * size, Opcode.TEXT), (b"\x01" * size, Opcode.BINARY)):
        wire = ws_frame(frame)
        assert len(wire) == header + size
        assert parsed(wire) == (opcode, b"t" * size if opcode is Opcode.TEXT else frame)


def test_text_lengths_count_utf8_bytes_not_characters() -> None:
    text = "é" * 63  # 126 bytes: past the one-byte length although 63 characters
    wire = ws_frame(text)
    assert wire[1] == 126 and len(wire) == 4 + 126
    assert parsed(wire) == (Opcode.TEXT, text.encode())


def test_the_same_broadcast_frame_is_encoded_once() -> None:
    frame = "shout" * 10
    assert ws_frame(frame) is ws_frame(frame)
    other = "shout" * 10 + "!"
    assert parsed(ws_frame(other))[1] == other.encode()


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None: ...

    def get_extra_info(self, name: str) -> Any:
        return None


class FakeConn:
    def __init__(self) -> None:
        self.state = State.OPEN
        self.extensions: list[Any] = []


class FakeProtocol:
    """The attributes of uvicorn's WebSocketsSansIOProtocol (>= 0.53) that DirectWriter uses."""

    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.close_sent = False
        self.disconnected = False
        self.writable = asyncio.Event()
        self.writable.set()
        self.conn = FakeConn()


def test_a_protocol_with_every_attribute_is_written_to_directly() -> None:
    assert refusal(FakeProtocol()) is None


@pytest.mark.parametrize("attribute", ["disconnected", "close_sent", "writable", "conn"])
def test_a_protocol_missing_an_attribute_the_writer_uses_is_refused(attribute: str) -> None:
    protocol = FakeProtocol()
    delattr(protocol, attribute)
    why = refusal(protocol)
    assert why is not None and attribute in why


@pytest.mark.parametrize("method", ["write", "is_closing", "get_write_buffer_size", "abort"])
def test_a_transport_missing_a_method_the_writer_uses_is_refused(method: str) -> None:
    protocol = FakeProtocol()
    protocol.transport = object()  # type: ignore[assignment]
    why = refusal(protocol)
    assert why is not None and method in why


def test_a_connection_with_compression_is_refused() -> None:
    protocol = FakeProtocol()
    protocol.conn.extensions = ["permessage-deflate"]
    assert "compression" in str(refusal(protocol))


def test_no_protocol_at_all_is_refused() -> None:
    assert refusal(None) is not None


def test_the_writer_writes_while_open_and_declines_while_paused() -> None:
    protocol = FakeProtocol()
    writer = DirectWriter(protocol)
    assert writer.try_write("a") is True
    protocol.writable.clear()
    assert writer.try_write("b") is False
    assert protocol.transport.written == [ws_frame("a")]


@pytest.mark.parametrize("how", ["close_sent", "disconnected", "transport_closing", "conn_closing"])
def test_the_writer_refuses_a_closing_connection(how: str) -> None:
    protocol = FakeProtocol()
    writer = DirectWriter(protocol)
    if how == "transport_closing":
        protocol.transport.closing = True
    elif how == "conn_closing":
        protocol.conn.state = State.CLOSING
    else:
        setattr(protocol, how, True)
    with pytest.raises(ConnectionResetError):
        writer.try_write("late")
    assert protocol.transport.written == []
