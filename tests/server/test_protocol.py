"""Tests of the sans-I/O socket protocol (server.protocol): data in, events and frames out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.server.errors import (
    FrameTooLarge,
    MalformedFrame,
    ProtocolError,
    UnsupportedVersion,
)
from switchboard.server.protocol import (
    JoinRequested,
    LeaveRequested,
    PushReceived,
    SocketProtocol,
    negotiate_version,
)

OK: dict[str, Any] = {"status": "ok", "response": {}}
FAST = settings(max_examples=100, deadline=None, derandomize=True, database=None)


def make(**options: Any) -> SocketProtocol:
    return SocketProtocol(lambda topic: topic.startswith(("room:", "test:")), **options)


def send(protocol: SocketProtocol, *frame: Any) -> None:
    protocol.receive(json.dumps(list(frame)))


def frames(protocol: SocketProtocol) -> list[Any]:
    """Frames out, JSON decoded (binary frames stay bytes)."""
    return [f if isinstance(f, bytes) else json.loads(f) for f in protocol.data_to_send()]


def joined(protocol: SocketProtocol, topic: str, join_ref: str) -> None:
    """Join ``topic`` and report success, leaving no events or frames behind."""
    send(protocol, join_ref, join_ref, topic, "phx_join", {})
    [event] = protocol.events_received()
    assert isinstance(event, JoinRequested)
    assert protocol.join_succeeded(topic, join_ref, join_ref, {})
    frames(protocol)


def error(reason: str) -> dict[str, Any]:
    return {"status": "error", "response": {"reason": reason}}


# --- heartbeat and refs


def test_a_heartbeat_is_answered_byte_for_byte_as_phoenix_does() -> None:
    protocol = make()
    protocol.receive('[null,"8","phoenix","heartbeat",{}]')
    assert protocol.data_to_send() == [
        '[null,"8","phoenix","phx_reply",{"status":"ok","response":{}}]'
    ]
    assert protocol.events_received() == []


@pytest.mark.parametrize("ref", ["4", "0004", "18446744073709551617", "x-ref", "ü", ""])
def test_refs_are_echoed_back_as_the_exact_strings_received(ref: str) -> None:
    protocol = make()
    send(protocol, None, ref, "phoenix", "heartbeat", {})
    assert frames(protocol) == [[None, ref, "phoenix", "phx_reply", OK]]


def test_refs_with_gaps_are_echoed_and_never_renumbered() -> None:
    protocol = make()
    joined(protocol, "room:a", "4")
    for ref in ("9", "5", "120"):
        send(protocol, "4", ref, "room:a", "ping", {})
        [event] = protocol.events_received()
        assert isinstance(event, PushReceived) and event.message.ref == ref
        protocol.reply("room:a", "4", ref, "ok", {"n": ref})
    assert frames(protocol) == [
        ["4", ref, "room:a", "phx_reply", {"status": "ok", "response": {"n": ref}}]
        for ref in ("9", "5", "120")
    ]


@FAST
@given(st.text(max_size=30))
def test_any_string_ref_comes_back_unchanged(ref: str) -> None:
    protocol = make()
    send(protocol, None, ref, "phoenix", "heartbeat", {})
    assert frames(protocol)[0][1] == ref


# --- join


def test_a_join_becomes_join_requested_and_success_replies_with_join_ref_equal_to_ref() -> None:
    protocol = make()
    send(protocol, "4", "4", "room:lobby", "phx_join", {"user": "a"})
    assert protocol.events_received() == [
        JoinRequested("room:lobby", "4", "4", {"user": "a"}, replaces=None)
    ]
    assert protocol.data_to_send() == []
    assert protocol.join_succeeded("room:lobby", "4", "4", {"welcome": True})
    assert frames(protocol) == [
        ["4", "4", "room:lobby", "phx_reply", {"status": "ok", "response": {"welcome": True}}]
    ]
    assert protocol.joined_topics() == {"room:lobby": "4"}


def test_a_refused_join_replies_error_and_frees_the_topic() -> None:
    protocol = make()
    send(protocol, "4", "4", "room:forbidden", "phx_join", {})
    protocol.events_received()
    protocol.join_failed("room:forbidden", "4", "4", {"reason": "unauthorized"})
    assert frames(protocol) == [["4", "4", "room:forbidden", "phx_reply", error("unauthorized")]]
    assert protocol.joined_topics() == {}
    send(protocol, "6", "6", "room:forbidden", "phx_join", {})
    assert protocol.events_received() == [JoinRequested("room:forbidden", "6", "6", {})]


def test_a_join_of_an_unmatched_topic_is_refused_with_a_null_join_ref() -> None:
    protocol = make()
    send(protocol, "7", "7", "nowhere:x", "phx_join", {})
    assert protocol.events_received() == []
    assert frames(protocol) == [[None, "7", "nowhere:x", "phx_reply", error("unmatched topic")]]
    assert protocol.joined_topics() == {}


def test_a_join_without_join_ref_uses_its_ref() -> None:
    protocol = make()
    send(protocol, None, "3", "room:a", "phx_join", {})
    assert protocol.events_received() == [JoinRequested("room:a", "3", "3", {})]


def test_a_join_with_neither_join_ref_nor_ref_is_a_protocol_error() -> None:
    protocol = make()
    with pytest.raises(ProtocolError):
        send(protocol, None, None, "room:a", "phx_join", {})


@pytest.mark.parametrize("payload", [[], "x", 1, None])
def test_a_join_with_a_non_object_payload_is_refused_as_invalid(payload: Any) -> None:
    protocol = make()
    send(protocol, "2", "2", "room:a", "phx_join", payload)
    assert protocol.events_received() == []
    assert frames(protocol) == [["2", "2", "room:a", "phx_reply", error("invalid payload")]]


def test_a_binary_join_is_refused_as_invalid_payload() -> None:
    protocol = make()
    protocol.receive(bytes([0, 1, 1, 6, 8]) + b"11room:aphx_join" + b"\x00")
    assert protocol.events_received() == []
    assert frames(protocol) == [["1", "1", "room:a", "phx_reply", error("invalid payload")]]


def test_a_join_over_the_channel_limit_is_refused() -> None:
    protocol = make(max_channels=2)
    joined(protocol, "room:a", "1")
    send(protocol, "2", "2", "room:b", "phx_join", {})  # still joining: counts too
    protocol.events_received()
    send(protocol, "3", "3", "room:c", "phx_join", {})
    assert protocol.events_received() == []
    assert frames(protocol) == [
        ["3", "3", "room:c", "phx_reply", error("too many channels joined")]
    ]


def test_rejoining_a_topic_at_the_channel_limit_is_allowed() -> None:
    protocol = make(max_channels=1)
    joined(protocol, "room:a", "1")
    send(protocol, "2", "2", "room:a", "phx_join", {})
    assert protocol.events_received() == [JoinRequested("room:a", "2", "2", {}, replaces="1")]


def test_a_channel_slot_frees_up_after_leaving() -> None:
    protocol = make(max_channels=1)
    joined(protocol, "room:a", "1")
    send(protocol, "1", "2", "room:a", "phx_leave", {})
    protocol.events_received()
    protocol.left("room:a", "1", "2")
    frames(protocol)
    send(protocol, "3", "3", "room:b", "phx_join", {})
    assert protocol.events_received() == [JoinRequested("room:b", "3", "3", {})]


# --- duplicate join


def test_a_duplicate_join_replies_to_the_new_join_then_closes_the_old_join_ref() -> None:
    protocol = make()
    joined(protocol, "room:a", "4")
    send(protocol, "9", "9", "room:a", "phx_join", {"again": 1})
    assert protocol.events_received() == [
        JoinRequested("room:a", "9", "9", {"again": 1}, replaces="4")
    ]
    assert protocol.data_to_send() == []
    assert protocol.join_succeeded("room:a", "9", "9", {})
    out = frames(protocol)
    assert out[0] == ["9", "9", "room:a", "phx_reply", OK]
    assert len(out) == 2
    assert (out[1][0], out[1][2:]) == ("4", ["room:a", "phx_close", {}])
    assert protocol.joined_topics() == {"room:a": "9"}


def test_a_late_success_of_a_superseded_join_sends_nothing() -> None:
    protocol = make()
    send(protocol, "1", "1", "room:a", "phx_join", {})
    send(protocol, "2", "2", "room:a", "phx_join", {})
    protocol.events_received()
    assert protocol.join_succeeded("room:a", "1", "1", {}) is False
    assert protocol.data_to_send() == []
    assert protocol.join_succeeded("room:a", "2", "2", {})
    out = frames(protocol)
    assert out[0] == ["2", "2", "room:a", "phx_reply", OK]
    assert [(f[0], f[3]) for f in out[1:]] == [("1", "phx_close")]


def test_a_duplicate_join_that_fails_still_closes_the_old_channel_after_the_error() -> None:
    protocol = make()
    joined(protocol, "room:a", "1")
    send(protocol, "2", "2", "room:a", "phx_join", {})
    protocol.events_received()
    protocol.join_failed("room:a", "2", "2", {"reason": "unauthorized"})
    out = frames(protocol)
    assert out[0] == ["2", "2", "room:a", "phx_reply", error("unauthorized")]
    assert [(f[0], f[3]) for f in out[1:]] == [("1", "phx_close")]
    assert protocol.joined_topics() == {}


# --- pushes


def test_a_push_on_a_joined_topic_becomes_push_received() -> None:
    protocol = make()
    joined(protocol, "room:a", "4")
    send(protocol, "4", "5", "room:a", "new_msg", {"body": "hi"})
    [event] = protocol.events_received()
    assert isinstance(event, PushReceived)
    assert (event.message.join_ref, event.message.ref, event.message.event) == ("4", "5", "new_msg")
    assert event.message.payload == {"body": "hi"}
    protocol.reply("room:a", "4", "5", "ok", {"id": 1})
    assert frames(protocol) == [
        ["4", "5", "room:a", "phx_reply", {"status": "ok", "response": {"id": 1}}]
    ]


def test_a_push_on_a_topic_not_joined_is_refused_as_unmatched() -> None:
    protocol = make()
    send(protocol, "4", "5", "room:a", "new_msg", {})
    assert protocol.events_received() == []
    assert frames(protocol) == [[None, "5", "room:a", "phx_reply", error("unmatched topic")]]


def test_a_push_with_a_stale_join_ref_is_ignored_without_a_frame() -> None:
    protocol = make()
    joined(protocol, "room:a", "4")
    joined(protocol, "room:a", "8")  # replaces 4
    send(protocol, "4", "9", "room:a", "new_msg", {})
    assert protocol.events_received() == []
    assert protocol.data_to_send() == []


def test_a_push_with_a_null_join_ref_reaches_the_channel() -> None:
    protocol = make()
    joined(protocol, "room:a", "4")
    send(protocol, None, "5", "room:a", "new_msg", {})
    [event] = protocol.events_received()
    assert isinstance(event, PushReceived)


@pytest.mark.parametrize("payload", [[1], "text", 3, None, True])
def test_a_push_with_a_non_object_payload_gets_an_invalid_payload_error(payload: Any) -> None:
    protocol = make()
    joined(protocol, "room:a", "4")
    send(protocol, "4", "5", "room:a", "new_msg", payload)
    assert protocol.events_received() == []
    assert frames(protocol) == [["4", "5", "room:a", "phx_reply", error("invalid payload")]]


def test_a_binary_kind_0_push_reaches_the_channel_with_bytes() -> None:
    protocol = make()
    joined(protocol, "room:a", "4")
    protocol.receive(bytes([0, 1, 2, 6, 4]) + b"4" + b"12" + b"room:a" + b"ping" + b"\x00\x01")
    [event] = protocol.events_received()
    assert isinstance(event, PushReceived)
    assert event.message.ref == "12" and event.message.payload == b"\x00\x01"
    protocol.reply("room:a", "4", "12", "ok", b"\x00\x01")
    assert protocol.data_to_send() == [
        bytes([1, 1, 2, 6, 2]) + b"4" + b"12" + b"room:a" + b"ok" + b"\x00\x01"
    ]


def test_a_push_to_the_phoenix_topic_other_than_heartbeat_is_unmatched() -> None:
    protocol = make()
    send(protocol, None, "3", "phoenix", "nope", {})
    assert frames(protocol) == [[None, "3", "phoenix", "phx_reply", error("unmatched topic")]]


def test_channel_pushes_go_out_only_after_the_join_reply() -> None:
    protocol = make()
    send(protocol, "4", "4", "room:a", "phx_join", {})
    protocol.events_received()
    protocol.push("room:a", "4", "early", {})
    assert protocol.data_to_send() == []
    protocol.join_succeeded("room:a", "4", "4", {})
    protocol.push("room:a", "4", "later", {"x": 1})
    assert frames(protocol) == [
        ["4", "4", "room:a", "phx_reply", OK],
        ["4", None, "room:a", "later", {"x": 1}],
    ]


def test_replies_and_pushes_of_a_replaced_channel_are_dropped() -> None:
    protocol = make()
    joined(protocol, "room:a", "4")
    joined(protocol, "room:a", "8")
    protocol.reply("room:a", "4", "5", "ok", {})
    protocol.push("room:a", "4", "late", {})
    assert protocol.data_to_send() == []


# --- leave


def test_a_leave_of_a_topic_not_joined_gets_an_ok_reply() -> None:
    protocol = make()
    send(protocol, "3", "9", "room:a", "phx_leave", {})
    assert protocol.events_received() == []
    assert frames(protocol) == [["3", "9", "room:a", "phx_reply", OK]]


def test_a_leave_of_a_joined_topic_replies_ok_then_closes_with_the_join_ref() -> None:
    protocol = make()
    joined(protocol, "room:a", "4")
    send(protocol, "4", "9", "room:a", "phx_leave", {})
    assert protocol.events_received() == [LeaveRequested("room:a", "4", "9")]
    assert protocol.data_to_send() == []
    protocol.left("room:a", "4", "9")
    out = frames(protocol)
    assert out[0] == ["4", "9", "room:a", "phx_reply", OK]
    assert len(out) == 2
    assert (out[1][0], out[1][2:]) == ("4", ["room:a", "phx_close", {}])
    assert protocol.joined_topics() == {}


def test_pushes_while_leaving_are_refused_as_unmatched() -> None:
    protocol = make()
    joined(protocol, "room:a", "4")
    send(protocol, "4", "9", "room:a", "phx_leave", {})
    protocol.events_received()
    send(protocol, "4", "10", "room:a", "ping", {})
    assert protocol.events_received() == []
    assert frames(protocol) == [[None, "10", "room:a", "phx_reply", error("unmatched topic")]]


def test_a_leave_with_a_stale_join_ref_gets_ok_and_leaves_the_current_channel_alone() -> None:
    protocol = make()
    joined(protocol, "room:a", "4")
    joined(protocol, "room:a", "8")
    send(protocol, "4", "9", "room:a", "phx_leave", {})
    assert protocol.events_received() == []
    assert frames(protocol) == [["4", "9", "room:a", "phx_reply", OK]]
    assert protocol.joined_topics() == {"room:a": "8"}


# --- server-initiated close and error


def test_a_normal_stop_sends_phx_close_with_the_join_ref() -> None:
    protocol = make()
    joined(protocol, "room:a", "4")
    protocol.channel_closed("room:a", "4")
    [frame] = frames(protocol)
    assert (frame[0], frame[2:]) == ("4", ["room:a", "phx_close", {}])
    assert protocol.joined_topics() == {}


def test_a_stop_with_a_final_reply_sends_the_reply_then_phx_close() -> None:
    protocol = make()
    joined(protocol, "room:a", "4")
    protocol.channel_closed("room:a", "4", ("7", "ok", {"bye": True}))
    out = frames(protocol)
    assert out[0] == ["4", "7", "room:a", "phx_reply", {"status": "ok", "response": {"bye": True}}]
    assert (out[1][0], out[1][3]) == ("4", "phx_close")


@pytest.mark.parametrize(
    "response",
    [
        pytest.param({"set": {1, 2}}, id="a type JSON has not"),
        pytest.param(json.loads("[" * 300 + "]" * 300), id="nested deeper than 254"),
    ],
)
def test_a_reply_that_cannot_be_encoded_becomes_an_error_reply_and_the_channel_stays(
    response: Any,
) -> None:
    protocol = make()
    joined(protocol, "room:a", "4")
    assert protocol.reply("room:a", "4", "7", "ok", response) is False
    assert frames(protocol) == [["4", "7", "room:a", "phx_reply", error("unencodable_reply")]]
    assert protocol.reply("room:a", "4", "8", "ok", {"fine": True}) is True
    assert protocol.joined_topics() == {"room:a": "4"}


def test_a_join_whose_ok_reply_cannot_be_encoded_fails_with_an_error_reply() -> None:
    protocol = make()
    send(protocol, "4", "4", "room:a", "phx_join", {})
    protocol.events_received()
    assert protocol.join_succeeded("room:a", "4", "4", {"set": {1}}) is False
    assert frames(protocol) == [["4", "4", "room:a", "phx_reply", error("unencodable_reply")]]
    assert protocol.joined_topics() == {}


def test_a_crash_sends_phx_error_with_the_join_ref_and_reason_channel_crash() -> None:
    protocol = make()
    joined(protocol, "room:a", "4")
    joined(protocol, "room:b", "5")
    protocol.channel_crashed("room:a", "4")
    [frame] = frames(protocol)
    assert (frame[0], frame[2:]) == ("4", ["room:a", "phx_error", {"reason": "channel_crash"}])
    assert protocol.joined_topics() == {"room:b": "5"}


def test_close_and_crash_of_a_channel_already_gone_send_nothing() -> None:
    protocol = make()
    joined(protocol, "room:a", "4")
    joined(protocol, "room:a", "8")
    protocol.channel_closed("room:a", "4")
    protocol.channel_crashed("room:a", "4")
    assert protocol.data_to_send() == []
    assert protocol.joined_topics() == {"room:a": "8"}


def _close_after_leave(protocol: SocketProtocol) -> list[Any]:
    send(protocol, "4", "9", "room:a", "phx_leave", {})
    protocol.events_received()
    protocol.left("room:a", "4", "9")
    return frames(protocol)[1:]


def _close_after_stop(protocol: SocketProtocol) -> list[Any]:
    protocol.channel_closed("room:a", "4")
    return frames(protocol)


def _error_after_crash(protocol: SocketProtocol) -> list[Any]:
    protocol.channel_crashed("room:a", "4")
    return frames(protocol)


def _close_after_duplicate_join(protocol: SocketProtocol) -> list[Any]:
    send(protocol, "11", "11", "room:a", "phx_join", {})
    protocol.events_received()
    protocol.join_succeeded("room:a", "11", "11", {})
    return frames(protocol)[1:]


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (_close_after_leave, ["4", "4", "room:a", "phx_close", {}]),
        (_close_after_stop, ["4", "4", "room:a", "phx_close", {}]),
        (_error_after_crash, ["4", "4", "room:a", "phx_error", {"reason": "channel_crash"}]),
        (_close_after_duplicate_join, ["4", "4", "room:a", "phx_close", {}]),
    ],
    ids=["leave", "stop", "crash", "duplicate-join"],
)
def test_server_initiated_close_and_error_carry_ref_equal_to_join_ref_per_protocol(
    cause: Any, expected: list[Any]
) -> None:
    """PROTOCOL.md §3: "Server-initiated close and error carry ref = join_ref"."""
    protocol = make()
    joined(protocol, "room:a", "4")
    assert cause(protocol) == [expected]


# --- bad input


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        '["1","1","room:a","ping"]',
        '[1,"1","room:a","ping",{}]',
        '["1",1,"room:a","ping",{}]',
        '["1","1",null,"ping",{}]',
        '["1","1","room:a",7,{}]',
        b"\x09garbage",
        bytes([0, 9, 9, 9, 9]) + b"short",
        b"\x00",
    ],
    ids=[
        "non-json",
        "four-elements",
        "int-join-ref",
        "int-ref",
        "null-topic",
        "int-event",
        "binary-garbage",
        "lengths-past-end",
        "truncated-header",
    ],
)
def test_unusable_frames_raise_malformed_frame_and_change_nothing(data: Any) -> None:
    protocol = make()
    joined(protocol, "room:a", "4")
    with pytest.raises(MalformedFrame) as caught:
        protocol.receive(data)
    assert caught.value.code == 1008
    assert protocol.events_received() == [] and protocol.data_to_send() == []
    assert protocol.joined_topics() == {"room:a": "4"}


def test_an_oversized_frame_raises_frame_too_large() -> None:
    protocol = make(max_frame_size=64)
    with pytest.raises(FrameTooLarge) as caught:
        send(protocol, None, "1", "phoenix", "heartbeat", {"pad": "x" * 64})
    assert caught.value.code == 1009
    with pytest.raises(FrameTooLarge):
        protocol.receive(bytes([0, 0, 1, 6, 4]) + b"1room:aping" + b"x" * 64)


# --- version


@pytest.mark.parametrize("vsn", ["2.0.0", "2.1", "2"])
def test_version_2_is_accepted(vsn: str) -> None:
    assert negotiate_version(vsn) == vsn


@pytest.mark.parametrize("vsn", [None, "", "1.0.0", "3.0", "20.0", "v2"])
def test_other_versions_and_a_missing_version_are_refused(vsn: str | None) -> None:
    with pytest.raises(UnsupportedVersion):
        negotiate_version(vsn)


# --- refusing (the driver's rate limits)

LIMITED = {"reason": "rate_limited"}


@pytest.mark.parametrize(
    ("frame", "reply"),
    [
        ([None, "7", "phoenix", "heartbeat", {}], [None, "7", "phoenix", "phx_reply"]),
        (["7", "7", "room:new", "phx_join", {}], ["7", "7", "room:new", "phx_reply"]),
        ([None, "7", "room:new", "phx_join", {}], ["7", "7", "room:new", "phx_reply"]),
        (["1", "7", "room:a", "ping", {}], ["1", "7", "room:a", "phx_reply"]),
        ([None, "7", "nowhere", "ping", {}], [None, "7", "nowhere", "phx_reply"]),
        (["1", "7", "room:a", "phx_leave", {}], ["1", "7", "room:a", "phx_reply"]),
    ],
)
def test_a_refused_message_gets_an_error_reply_and_changes_nothing(
    frame: list[Any], reply: list[Any]
) -> None:
    protocol = make()
    joined(protocol, "room:a", "1")
    protocol.refuse(protocol.decode(json.dumps(frame)), LIMITED)
    assert frames(protocol) == [[*reply, {"status": "error", "response": LIMITED}]]
    assert protocol.events_received() == []
    assert protocol.joined_topics() == {"room:a": "1"}
