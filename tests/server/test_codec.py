"""Tests of the V2 frame codec (server.codec): text and binary frames, both directions."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.server import codec
from switchboard.server.codec import Message, decode, decode_broadcast
from switchboard.server.errors import FrameTooLarge, MalformedFrame, ProtocolError

FAST = settings(max_examples=100, deadline=None, derandomize=True, database=None)
MAX = 1024 * 1024

refs = st.none() | st.text(max_size=20)
names = st.text(min_size=1, max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
# Binary header fields: at most 255 UTF-8 bytes each.
short = st.text(max_size=60).filter(lambda s: len(s.encode()) <= 255)
short_names = short.filter(bool)


def binary_push(join_ref: str, ref: str, topic: str, event: str, data: bytes) -> bytes:
    """Client-to-server kind 0, written from PROTOCOL.md §2."""
    fields = [f.encode() for f in (join_ref, ref, topic, event)]
    return bytes([0, *(len(f) for f in fields)]) + b"".join(fields) + data


def read_fields(frame: bytes, count: int) -> tuple[list[str], bytes]:
    """Split a server binary frame: ``count`` one-byte lengths after the kind, then data."""
    lengths = frame[1 : 1 + count]
    at = 1 + count
    fields = []
    for length in lengths:
        fields.append(frame[at : at + length].decode())
        at += length
    return fields, frame[at:]


# --- text frames in


def test_a_text_frame_decodes_to_a_message_with_refs_kept_as_strings() -> None:
    message = decode('["4","17","room:lobby","new_msg",{"body":"hi"}]', MAX)
    assert message == Message("4", "17", "room:lobby", "new_msg", {"body": "hi"})


def test_null_refs_decode_to_none() -> None:
    assert decode('[null,null,"phoenix","heartbeat",{}]', MAX) == Message(
        None, None, "phoenix", "heartbeat", {}
    )


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "",
        "{",
        '{"topic":"room:a","event":"x","payload":{},"ref":"1"}',  # a V1 object
        '["1","1","room:a","x"]',
        '["1","1","room:a","x",{},{}]',
        "[]",
        '"a string"',
        "42",
        '[1,"1","room:a","x",{}]',
        '["1",2,"room:a","x",{}]',
        '["1","1",3,"x",{}]',
        '["1","1","room:a",null,{}]',
        '["1","1","","x",{}]',
        '["1","1","room:a","",{}]',
        '["1","1",["room:a"],"x",{}]',
        "[" * 5000 + "]" * 5000,
    ],
    ids=lambda text: text[:40] or "empty",
)
def test_unusable_text_frames_raise_malformed_frame(text: str) -> None:
    with pytest.raises(MalformedFrame) as caught:
        decode(text, MAX)
    assert caught.value.code == 1008


def test_a_payload_of_any_json_type_decodes_and_is_judged_by_the_protocol() -> None:
    assert decode('["1","2","room:a","ev",[1,2]]', MAX).payload == [1, 2]
    assert decode('["1","2","room:a","ev","text"]', MAX).payload == "text"


def test_a_frame_over_the_maximum_size_raises_frame_too_large_with_code_1009() -> None:
    frame = json.dumps(["1", "1", "room:a", "ping", {"x": "y" * 100}])
    assert decode(frame, len(frame)).payload == {"x": "y" * 100}
    with pytest.raises(FrameTooLarge) as caught:
        decode(frame, len(frame) - 1)
    assert caught.value.code == 1009
    with pytest.raises(FrameTooLarge):
        decode(frame.encode(), len(frame) - 1)


def test_the_maximum_frame_size_counts_utf8_bytes_of_text_frames() -> None:
    frame = json.dumps(["1", "1", "room:a", "ping", {"x": "é" * 600}], ensure_ascii=False)
    assert len(frame) < 1000 < len(frame.encode())
    with pytest.raises(FrameTooLarge):
        decode(frame, 1000)


# --- binary frames in


def test_a_binary_kind_0_push_decodes_with_bytes_payload() -> None:
    frame = binary_push("4", "12", "room:lobby", "upload", b"\x00\x01\xff")
    assert decode(frame, MAX) == Message("4", "12", "room:lobby", "upload", b"\x00\x01\xff")


def test_empty_refs_in_a_binary_push_decode_to_none() -> None:
    assert decode(binary_push("", "", "room:a", "ev", b""), MAX) == Message(
        None, None, "room:a", "ev", b""
    )


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00",
        b"\x00\x01\x01\x01",
        b"\xff\x00\x01\x02\x03garbage",
        b"\x01\x00\x00\x01\x01ab",  # kind 1 is server-to-client only
        b"\x02\x01\x01ab",
        bytes([0, 1, 1, 6, 200]) + b"11room:aev",  # event length runs past the end
        bytes([0, 255, 255, 255, 255]),
        bytes([0, 0, 0, 0, 2]) + b"ev",  # no topic
        bytes([0, 0, 0, 1, 0]) + b"t",  # no event
        bytes([0, 0, 0, 2, 1]) + b"\xff\xfee",  # topic not UTF-8
    ],
    ids=lambda frame: frame[:12].hex() or "empty",
)
def test_unusable_binary_frames_raise_malformed_frame(frame: bytes) -> None:
    with pytest.raises(MalformedFrame):
        decode(frame, MAX)


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_either_decode_or_raise_a_protocol_error(data: bytes) -> None:
    try:
        message = decode(data, MAX)
    except ProtocolError:
        return
    assert isinstance(message.payload, bytes) and message.topic and message.event


@FAST
@given(st.text(max_size=200))
def test_arbitrary_text_either_decodes_or_raises_a_protocol_error(text: str) -> None:
    try:
        decode(text, MAX)
    except ProtocolError:
        pass


@FAST
@given(refs, refs, names, names, json_objects)
def test_text_frames_round_trip_through_json(
    join_ref: str | None, ref: str | None, topic: str, event: str, payload: dict[str, object]
) -> None:
    text = json.dumps([join_ref, ref, topic, event, payload])
    assert decode(text, MAX) == Message(join_ref, ref, topic, event, payload)


@FAST
@given(short, short, short_names, short_names, st.binary(max_size=100))
def test_binary_pushes_round_trip(
    join_ref: str, ref: str, topic: str, event: str, data: bytes
) -> None:
    message = decode(binary_push(join_ref, ref, topic, event, data), MAX)
    assert message == Message(join_ref or None, ref or None, topic, event, data)


# --- frames out


def test_a_json_reply_is_a_phx_reply_with_status_and_response() -> None:
    frame = codec.encode_reply("4", "5", "room:lobby", "ok", {"id": 1})
    assert frame == '["4","5","room:lobby","phx_reply",{"status":"ok","response":{"id":1}}]'


def test_a_json_push_has_the_join_ref_and_a_null_ref() -> None:
    frame = codec.encode_push("4", "room:lobby", "pushed", {"a": 1})
    assert json.loads(frame) == ["4", None, "room:lobby", "pushed", {"a": 1}]


def test_a_json_broadcast_has_null_refs() -> None:
    frame = codec.encode_broadcast("room:lobby", "shout", {"a": 1})
    assert frame == '[null,null,"room:lobby","shout",{"a":1}]'


def test_a_binary_reply_is_kind_1_with_the_documented_byte_layout() -> None:
    frame = codec.encode_reply("4", "15", "room:lobby", "ok", b"\x00\xffdata")
    assert frame == bytes([1, 1, 2, 10, 2]) + b"4" + b"15" + b"room:lobby" + b"ok" + b"\x00\xffdata"


def test_a_binary_broadcast_is_kind_2_with_the_documented_byte_layout() -> None:
    frame = codec.encode_broadcast("room:lobby", "shout", b"\x01\x02")
    assert frame == bytes([2, 10, 5]) + b"room:lobby" + b"shout" + b"\x01\x02"


def test_a_binary_push_is_kind_0_without_a_ref() -> None:
    frame = codec.encode_push("4", "room:lobby", "pushed", b"\x07")
    assert frame == bytes([0, 1, 10, 6]) + b"4" + b"room:lobby" + b"pushed" + b"\x07"


def test_binary_length_fields_count_utf8_bytes() -> None:
    frame = codec.encode_broadcast("room:é", "ü", b"")
    assert isinstance(frame, bytes)
    assert frame[:3] == bytes([2, 7, 2])
    assert read_fields(frame, 2) == (["room:é", "ü"], b"")


def test_a_null_join_ref_in_a_binary_reply_has_length_zero() -> None:
    frame = codec.encode_reply(None, "8", "room:a", "ok", b"")
    assert frame == bytes([1, 0, 1, 6, 2]) + b"8room:aok"


def test_a_binary_field_over_255_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="255"):
        codec.encode_broadcast("room:" + "x" * 251, "ev", b"")
    codec.encode_broadcast("room:" + "x" * 250, "ev", b"")


@FAST
@given(short, short, short_names, short, st.binary(max_size=100))
def test_binary_replies_parse_back_by_the_documented_layout(
    join_ref: str, ref: str, topic: str, status: str, data: bytes
) -> None:
    frame = codec.encode_reply(join_ref, ref, topic, status, data)
    assert isinstance(frame, bytes) and frame[0] == 1
    assert read_fields(frame, 4) == ([join_ref, ref, topic, status], data)


@FAST
@given(short_names, short_names, st.binary(max_size=100) | json_objects)
def test_broadcasts_decode_back_to_topic_event_and_payload(
    topic: str, event: str, payload: bytes | dict[str, object]
) -> None:
    assert decode_broadcast(codec.encode_broadcast(topic, event, payload)) == (
        topic,
        event,
        payload,
    )


@FAST
@given(refs, refs, names, names, json_objects)
def test_json_replies_parse_back_to_the_same_fields(
    join_ref: str | None, ref: str | None, topic: str, status: str, response: dict[str, object]
) -> None:
    frame = codec.encode_reply(join_ref, ref, topic, status, response)
    assert json.loads(frame) == [
        join_ref,
        ref,
        topic,
        "phx_reply",
        {"status": status, "response": response},
    ]
