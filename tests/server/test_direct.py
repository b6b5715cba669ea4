"""Tests of server.direct: the frames it writes, the frames it reads, and when it agrees
to do either."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from switchboard.server.direct import BATCH, DirectReader, DirectWriter, refusal, ws_frame


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
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None: ...

    def get_extra_info(self, name: str) -> Any:
        return None

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class FakeConn:
    def __init__(self) -> None:
        self.state = State.OPEN
        self.extensions: list[Any] = []
        self.writes: list[bytes] = []

    def data_to_send(self) -> list[bytes]:
        writes, self.writes = self.writes, []
        return writes


CLOSE_REPLY = bytes((0x88, 2)) + (1000).to_bytes(2, "big")


def pong(payload: bytes) -> bytes:
    """The pong frame websockets queues for a ping carrying ``payload``."""
    return bytes((0x8A, len(payload))) + payload


class FakeProtocol:
    """The attributes of uvicorn's WebSocketsSansIOProtocol (>= 0.53) that the direct paths
    use. Made inside a running loop (its queue and event belong to it)."""

    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.close_sent = False
        self.disconnected = False
        self.writable = asyncio.Event()
        self.writable.set()
        self.conn = FakeConn()
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.read_paused = False

    def handle_ping(self) -> None:
        """uvicorn's own: write the pong websockets queued."""
        self.transport.write(b"".join(self.conn.data_to_send()))

    def read_arrives(self, *frames: bytes) -> None:
        """What uvicorn does with a read holding pings (and maybe a close frame): websockets
        parses it all and queues a pong for each ping (and its reply to the close), then
        uvicorn calls handle_ping once per ping, then writes the close reply."""
        pings = 0
        for payload in frames:
            if payload == b"close":
                self.conn.writes.append(CLOSE_REPLY)
            else:
                self.conn.writes.append(pong(payload))
                pings += 1
        for _ in range(pings):
            self.handle_ping()
        self.transport.write(b"".join(self.conn.data_to_send()))  # handle_close's write

    def frame_arrives(self, text: str) -> None:
        """What uvicorn does with a text frame its parser produced."""
        self.queue.put_nowait({"type": "websocket.receive", "text": text})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()


def run(scenario: Any) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 5))


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


# -- reading


def test_reading_needs_the_queue_and_the_pause_flag_but_allows_compression() -> None:
    async def scenario() -> None:
        protocol = FakeProtocol()
        assert refusal(protocol, reading=True) is None
        protocol.conn.extensions = ["permessage-deflate"]
        assert refusal(protocol, reading=True) is None
        for attribute in ("queue", "read_paused", "handle_ping"):
            broken = FakeProtocol()
            setattr(broken, attribute, None)
            assert attribute in str(refusal(broken, reading=True))

    run(scenario)


def test_frames_go_to_the_socket_as_they_arrive_and_reading_never_pauses() -> None:
    async def scenario() -> None:
        protocol = FakeProtocol()
        handled: list[Any] = []
        DirectReader(protocol, handled.append).install()
        for n in range(3):
            protocol.frame_arrives(str(n))
            assert handled == [str(i) for i in range(n + 1)]  # at once, no task in between
        assert not protocol.transport.paused

    run(scenario)


def test_frames_queued_before_the_reader_took_over_come_first() -> None:
    async def scenario() -> None:
        protocol = FakeProtocol()
        protocol.frame_arrives("early")
        assert protocol.transport.paused
        handled: list[Any] = []
        DirectReader(protocol, handled.append).install()
        protocol.frame_arrives("late")
        assert handled == ["early", "late"]
        assert not protocol.transport.paused

    run(scenario)


def test_a_burst_is_handled_a_batch_per_loop_iteration_with_others_served_between() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        protocol = FakeProtocol()
        handled: list[Any] = []
        reader = DirectReader(protocol, handled.append)
        reader.install()
        others: list[int] = []
        loop.call_soon(lambda: others.append(len(handled)))  # another socket's turn
        for n in range(5 * BATCH):  # one read's worth of frames, in one callback
            protocol.frame_arrives(str(n))
        assert len(handled) == BATCH and protocol.transport.paused
        while len(handled) < 5 * BATCH:
            await asyncio.sleep(0)
        assert others == [BATCH]
        assert handled == [str(n) for n in range(5 * BATCH)]
        await asyncio.sleep(0)
        assert not protocol.transport.paused

    run(scenario)


def test_a_disconnect_ends_the_reader() -> None:
    async def scenario() -> None:
        protocol = FakeProtocol()
        reader = DirectReader(protocol, lambda data: None)
        reader.install()
        protocol.queue.put_nowait({"type": "websocket.disconnect", "code": 1005})
        await reader.ended
        assert reader.error is None

    run(scenario)


def test_an_exception_while_handling_a_frame_ends_the_reader_with_it() -> None:
    async def scenario() -> None:
        protocol = FakeProtocol()

        def receive(data: Any) -> None:
            raise ValueError(data)

        reader = DirectReader(protocol, receive)
        reader.install()
        protocol.frame_arrives("boom")
        protocol.frame_arrives("after")  # ignored: the reader has ended
        await reader.ended
        assert isinstance(reader.error, ValueError) and reader.error.args == ("boom",)

    run(scenario)


def test_a_close_sent_while_handling_a_frame_leaves_reading_on() -> None:
    """uvicorn clears ``read_paused`` (and resumes reading) when the close frame goes out,
    to read the client's close frame; it must not pause again once the frame is handled."""

    async def scenario() -> None:
        protocol = FakeProtocol()

        def receive(data: Any) -> None:
            protocol.read_paused = False  # what uvicorn's send does with websocket.close
            protocol.queue.put_nowait({"type": "websocket.disconnect", "code": 1008})

        DirectReader(protocol, receive).install()
        protocol.frame_arrives("bad")
        assert not protocol.transport.paused

    run(scenario)


def test_each_ping_of_a_read_is_answered_only_if_the_socket_allows_it() -> None:
    async def scenario() -> None:
        protocol = FakeProtocol()
        asked: list[int] = []
        allow = [True, False, True]

        def on_ping(unsent: int) -> bool:
            asked.append(unsent)
            return allow.pop(0)

        DirectReader(protocol, lambda data: None, on_ping).install()
        protocol.read_arrives(b"a", b"bb", b"ccc", b"close")
        # the socket is told of each ping in turn, with what would then wait (the buffer
        # of this fake stays empty: its writes are never pending)
        assert asked == [len(pong(b"a")), len(pong(b"bb")), len(pong(b"ccc"))]
        written = [data for data in protocol.transport.written if data]
        assert written == [pong(b"a"), pong(b"ccc"), CLOSE_REPLY]

    run(scenario)


# -- letting go of the handshake


class HandshakenProtocol:
    """uvicorn's protocol right after the upgrade, around a real websockets ServerProtocol."""

    def __init__(self) -> None:
        from websockets.server import ServerProtocol

        client = ClientProtocol(parse_uri("ws://127.0.0.1/socket"))
        client.send_request(client.connect())
        self.conn = ServerProtocol()
        self.conn.receive_data(b"".join(client.data_to_send()))
        [self.request] = self.conn.events_received()
        self.response = self.conn.accept(self.request)
        self.conn.send_response(self.response)
        self.conn.data_to_send()
        self.handshake_complete = True


def test_releasing_the_handshake_drops_the_request_and_frames_still_parse() -> None:
    from websockets.frames import Frame

    from switchboard.server.direct import release_handshake

    protocol = HandshakenProtocol()
    request = protocol.request
    assert request in protocol.conn.parser.gi_frame.f_locals.values()  # kept by the parser
    release_handshake(protocol)
    assert protocol.request is None and protocol.response is None  # type: ignore[unreachable]
    assert request not in protocol.conn.parser.gi_frame.f_locals.values()
    masked = Frame(Opcode.TEXT, b'["1","1","room:a","phx_join",{}]').serialize(
        mask=True, extensions=[]
    )
    protocol.conn.receive_data(masked[:5])
    protocol.conn.receive_data(masked[5:])
    [frame] = protocol.conn.events_received()
    assert frame.data == b'["1","1","room:a","phx_join",{}]'


def test_a_parser_already_inside_a_frame_is_kept() -> None:
    from websockets.frames import Frame

    from switchboard.server.direct import release_handshake

    protocol = HandshakenProtocol()
    masked = Frame(Opcode.TEXT, b"[]").serialize(mask=True, extensions=[])
    protocol.conn.receive_data(masked[:2])  # its header (all read: the buffer is empty)
    parser = protocol.conn.parser
    release_handshake(protocol)
    assert protocol.conn.parser is parser
    protocol.conn.receive_data(masked[2:])
    assert [f.data for f in protocol.conn.events_received()] == [b"[]"]
