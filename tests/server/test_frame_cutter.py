"""The frame cutter on its own (sans-I/O): bytes in, whole client frames out, and the bytes
websockets must take over from once a frame is not one it cuts."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from switchboard.server.codec import Frame as Payload
from switchboard.server.frame_cutter import FrameCutter


def wire(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=True, extensions=[])


class Sink:
    """Collects what the cutter hands over; ``stop_after`` frames, it says stop."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.got: list[Any] = []
        self.stop_after = stop_after

    def deliver(self, payload: Payload) -> bool:
        self.got.append(payload)
        return self.stop_after is None or len(self.got) < self.stop_after

    def control(self, frame: bytes) -> bool:
        self.got.append(("control", frame))
        return True


def cut(cutter: FrameCutter, sink: Sink, *reads: bytes) -> bytes | None:
    for data in reads:
        rest = cutter.feed(data, sink.deliver, sink.control)
        if rest is not None:
            return rest
    return None


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70_000])
def test_text_and_binary_of_every_header_size_come_out_whole(size: int) -> None:
    text = "é" * (size // 2) + "x" * (size % 2)
    blob = bytes(range(256)) * (size // 256) + bytes(size % 256)
    sink = Sink()
    stream = wire(Opcode.TEXT, text.encode()) + wire(Opcode.BINARY, blob)
    assert cut(FrameCutter(None), sink, stream) is None
    assert sink.got == [text, blob]


@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
)
def test_frames_split_across_reads_anywhere_come_out_the_same(
    payloads: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(wire(Opcode.BINARY, p) for p in payloads)
    points = sorted({min(c, len(stream)) for c in cuts})
    reads = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    sink = Sink()
    assert cut(FrameCutter(None), sink, *reads) is None
    assert sink.got == payloads


def test_a_ping_or_pong_goes_to_websockets_alone_and_cutting_goes_on() -> None:
    ping, pong = wire(Opcode.PING, b"are you there"), wire(Opcode.PONG, b"")
    sink = Sink()
    stream = wire(Opcode.TEXT, b"a") + ping + wire(Opcode.TEXT, b"b") + pong
    assert cut(FrameCutter(None), sink, stream[:9], stream[9:]) is None
    assert sink.got == ["a", ("control", ping), "b", ("control", pong)]


@pytest.mark.parametrize(
    "other",
    [
        wire(Opcode.CLOSE, b"\x03\xe8"),
        wire(Opcode.TEXT, b"frag", fin=False) + wire(Opcode.CONT, b"ment"),
        Frame(Opcode.TEXT, b"unmasked").serialize(mask=False, extensions=[]),
        wire(Opcode.TEXT, b"\xff\xfe not utf-8"),
        bytes([0xC1]) + wire(Opcode.TEXT, b"rsv1 set")[1:],
        bytes([0x89, 0xFE, 0, 126, 0, 0, 0, 0]) + b"x" * 126,  # a ping too long for one
    ],
    ids=["close", "fragment", "unmasked", "bad-utf8", "rsv1", "long-ping"],
)
def test_any_other_frame_and_all_after_it_are_handed_back(other: bytes) -> None:
    after = wire(Opcode.TEXT, b"later")
    sink = Sink()
    rest = cut(FrameCutter(None), sink, wire(Opcode.TEXT, b"first") + other + after)
    assert sink.got == ["first"]
    assert rest == other + after


def test_a_frame_over_the_limit_is_handed_back_as_soon_as_its_header_is_in() -> None:
    big = wire(Opcode.BINARY, b"x" * 2000)
    sink = Sink()
    cutter = FrameCutter(max_size=1000)
    rest = cut(cutter, sink, wire(Opcode.BINARY, b"x" * 1000) + big[:4])
    assert rest == big[:4] and sink.got == [b"x" * 1000]


def test_when_deliver_says_stop_the_frames_after_it_are_handed_back() -> None:
    frames = [wire(Opcode.TEXT, name) for name in (b"a", b"b", b"c")]
    sink = Sink(stop_after=2)
    assert cut(FrameCutter(None), sink, b"".join(frames)) == frames[2]
    assert sink.got == ["a", "b"]


def test_stopping_between_reads_hands_back_the_partial_frame_first() -> None:
    frame = wire(Opcode.TEXT, b"half here, half later")
    cutter = FrameCutter(None)
    sink = Sink()
    assert cut(cutter, sink, frame[:7]) is None and sink.got == []
    assert cutter.rest(frame[7:]) == frame
    assert cutter.rest(b"") == b""


def test_a_big_frame_trickled_in_small_reads_comes_out_whole_after_the_last() -> None:
    blob = bytes(range(256)) * 4096  # 1 MiB
    stream = wire(Opcode.BINARY, blob) + wire(Opcode.TEXT, b"next")
    sink = Sink()
    cutter = FrameCutter(max_size=2**20)
    *reads, last = [stream[at : at + 1024] for at in range(0, len(stream), 1024)]
    for read in reads:  # the blob's header says 1 MiB + 14 bytes: it ends in the last read
        assert cutter.feed(read, sink.deliver, sink.control) is None
    assert sink.got == []
    assert cut(cutter, sink, last) is None
    assert sink.got == [blob, "next"]
