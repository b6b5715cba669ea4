"""The official phoenix.js client (npm ``phoenix``, over Node's ``ws``) against a real node.

Each test checks one scenario of ``tests/client/js/scenarios.js``: the script drives real
phoenix.js sockets, records every frame on the wire and every client callback, and the
assertions here read those records (see ``conftest.py``). Frames are
``[join_ref, ref, topic, event, payload]``; binary frames are decoded per PROTOCOL.md §2.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.client.runner import ScenarioPool, ScenarioRun


def decode_from_server(data: list[int]) -> dict[str, Any]:
    """A binary frame the server sent: push (0), reply (1) or broadcast (2)."""
    raw = bytes(data)
    kind = raw[0]
    if kind == 0:
        names, sizes, pos = ("join_ref", "topic", "event"), raw[1:4], 4
    elif kind == 1:
        names, sizes, pos = ("join_ref", "ref", "topic", "status"), raw[1:5], 5
    elif kind == 2:
        names, sizes, pos = ("topic", "event"), raw[1:3], 3
    else:
        raise AssertionError(f"unknown binary kind {kind}: {data}")
    frame: dict[str, Any] = {"kind": kind}
    for name, size in zip(names, sizes, strict=True):
        frame[name] = raw[pos : pos + size].decode()
        pos += size
    frame["data"] = list(raw[pos:])
    return frame


def decode_from_client(data: list[int]) -> dict[str, Any]:
    """A binary push (kind 0) the client sent."""
    raw = bytes(data)
    assert raw[0] == 0, data
    frame: dict[str, Any] = {"kind": 0}
    pos = 5
    for name, size in zip(("join_ref", "ref", "topic", "event"), raw[1:5], strict=True):
        frame[name] = raw[pos : pos + size].decode()
        pos += size
    frame["data"] = list(raw[pos:])
    return frame


# -- connecting ------------------------------------------------------------------------------


@pytest.mark.phoenix_js("join_ok")
def test_the_socket_connects_with_its_params_and_vsn_2_in_the_query_string(
    scenario: ScenarioRun,
) -> None:
    (connect,) = scenario.of("a", "connect")
    url = urlsplit(connect["url"])
    assert url.path == "/socket/websocket"
    query = parse_qs(url.query)
    assert query["vsn"] == ["2.0.0"]
    assert query["token"] and query["token"][0]
    assert len(scenario.of("a", "open")) == 1
    assert scenario.of("a", "close") == []


@pytest.mark.phoenix_js("bad_token")
def test_a_bad_token_is_refused_with_403_and_the_client_keeps_retrying_without_opening(
    scenario: ScenarioRun,
) -> None:
    assert scenario.of("a", "open") == []
    assert scenario.of("a", "ws_open") == []
    closes = scenario.of("a", "close")
    assert len(closes) >= 3, "the client retries the connection"
    assert {c["code"] for c in closes} == {1006}
    errors = scenario.of("a", "error")
    assert len(errors) >= 3
    assert all("403" in e["message"] for e in errors), errors
    # the channel the client tried to join got a local error
    assert scenario.of("a", "chan_error")[0]["reason"]["reason"] == "connection_error"
    assert len(scenario.of("a", "connect")) >= 3
    assert scenario.frames("a", "out") == []


@pytest.mark.phoenix_js("auth_token")
def test_the_auth_token_option_connects_via_the_subprotocol_and_the_server_answers_phoenix(
    scenario: ScenarioRun,
) -> None:
    (connect,) = scenario.of("a", "connect")
    assert "token=" not in connect["url"]
    offered = connect["protocols"]
    assert offered[0] == "phoenix"
    assert offered[1].startswith("base64url.bearer.phx.")
    assert scenario.obs["protocol"] == "phoenix"
    assert len(scenario.of("a", "open")) == 1
    assert scenario.obs["join"]["status"] == "ok"
    assert scenario.obs["ping"] == {
        **scenario.obs["ping"],
        "status": "ok",
        "response": {"via": "authToken"},
    }


# -- join, push, reply -----------------------------------------------------------------------


@pytest.mark.phoenix_js("join_ok")
def test_a_join_is_answered_ok_with_the_rooms_history_position_only(
    scenario: ScenarioRun,
) -> None:
    join = scenario.obs["join"]
    assert join["status"] == "ok"
    assert join["response"] == {"position": join["response"]["position"], "recovered": False}
    assert scenario.obs["state"] == "joined"


@pytest.mark.phoenix_js("join_ok")
def test_the_join_frame_has_join_ref_equal_to_ref_and_the_reply_echoes_both(
    scenario: ScenarioRun,
) -> None:
    topic, join_ref = scenario.obs["topic"], scenario.obs["join"]["joinRef"]
    assert scenario.sent("a", "phx_join") == [[join_ref, join_ref, topic, "phx_join", {}]]
    (reply,) = scenario.reply_to("a", join_ref)
    assert reply[:4] == [join_ref, join_ref, topic, "phx_reply"]
    assert reply[4]["status"] == "ok"


@pytest.mark.phoenix_js("ping")
def test_a_ping_reply_echoes_the_payload(scenario: ScenarioRun) -> None:
    assert scenario.obs["ping"]["status"] == "ok"
    assert scenario.obs["ping"]["response"] == scenario.obs["payload"]


@pytest.mark.phoenix_js("ping")
def test_a_push_and_its_reply_carry_the_join_ref_of_the_join(scenario: ScenarioRun) -> None:
    topic, payload = scenario.obs["topic"], scenario.obs["payload"]
    join_ref, ref = scenario.obs["join"]["joinRef"], scenario.obs["ping"]["ref"]
    (join,) = scenario.sent("a", "phx_join")
    assert join[0] == join[1] == join_ref
    assert scenario.sent("a", "ping") == [[join_ref, ref, topic, "ping", payload]]
    assert scenario.reply_to("a", ref) == [
        [join_ref, ref, topic, "phx_reply", {"status": "ok", "response": payload}]
    ]


@pytest.mark.phoenix_js("server_push")
def test_a_direct_push_from_the_channel_carries_the_join_ref_and_no_ref(
    scenario: ScenarioRun,
) -> None:
    topic, join_ref = scenario.obs["topic"], scenario.obs["join"]["joinRef"]
    assert scenario.obs["join"]["response"] == {"join_ref": join_ref}
    assert scenario.obs["pushed"] == [{"hello": "you"}]
    assert scenario.received("a", "pushed") == [[join_ref, None, topic, "pushed", {"hello": "you"}]]


@pytest.mark.phoenix_js("push_timeout")
def test_a_push_unanswered_within_its_timeout_times_out_and_the_socket_stays_up(
    scenario: ScenarioRun,
) -> None:
    sleep = scenario.obs["sleep"]
    assert sleep["status"] == "timeout"
    assert 250 <= sleep["elapsed"] < 800, "timed out after the push's own 300 ms"
    assert scenario.obs["connected_after_timeout"] is True
    assert scenario.obs["side_ping"]["status"] == "ok"
    # the slow channel carries on: its late reply comes first, then the next push's reply
    late = scenario.reply_to("a", sleep["ref"])
    assert [f[4]["status"] for f in late] == ["ok"]
    assert scenario.obs["slow_ping"] == {
        **scenario.obs["slow_ping"],
        "status": "ok",
        "response": {"after": "sleep"},
    }
    assert scenario.obs["connected"] is True
    assert len(scenario.of("a", "open")) == 1
    assert scenario.of("a", "close") == []


@pytest.mark.phoenix_js("back_to_back")
def test_replies_to_pushes_sent_together_are_not_held_back(scenario: ScenarioRun) -> None:
    """Three pings in one go, six times: the replies come within a few ms of each other.

    A server socket without TCP_NODELAY holds every later reply back until the client's
    delayed ACK (~40 ms on Linux), so each round takes ~43 ms instead of ~1 ms.
    """
    spreads = sorted(r["last"] - r["first"] for r in scenario.obs["rounds"])
    median = spreads[len(spreads) // 2]
    assert median < 20, f"replies held back (Nagle?): spreads {spreads} ms"


# -- broadcasts ------------------------------------------------------------------------------


@pytest.mark.phoenix_js("shout")
def test_a_shout_reaches_every_member_including_the_sender(scenario: ScenarioRun) -> None:
    topic = scenario.obs["topic"]
    shout = {"body": "hi all", "user": scenario.users["a"]}  # stamped by the server
    assert scenario.obs["shouts"] == {"a": [shout], "b": [shout]}
    (frame,) = scenario.received("a", "shout")
    assert frame == [None, frame[1], topic, "shout", shout]
    assert isinstance(frame[1], str), "a history position is a string ref"
    assert scenario.received("b", "shout") == [frame]


@pytest.mark.phoenix_js("shout_from")
def test_a_shout_from_reaches_the_other_members_but_not_the_sender(scenario: ScenarioRun) -> None:
    shouts = scenario.obs["shouts"]
    one, two = ({"n": n, "user": scenario.users["a"]} for n in (1, 2))
    assert shouts["b"] == [one, two]
    assert shouts["c"] == [one, two]
    assert shouts["a"] == [two], "the sender got its own shout_from"
    assert [f[4] for f in scenario.received("a", "shout")] == [two]


# -- refused joins ---------------------------------------------------------------------------


@pytest.mark.phoenix_js("join_refused")
def test_joining_room_forbidden_is_refused_as_unauthorized(scenario: ScenarioRun) -> None:
    forbidden = scenario.obs["forbidden"]
    assert forbidden["status"] == "error"
    assert forbidden["response"] == {"reason": "unauthorized"}
    join_ref = forbidden["joinRef"]
    assert scenario.reply_to("a", join_ref) == [
        [
            join_ref,
            join_ref,
            "room:forbidden",
            "phx_reply",
            {"status": "error", "response": {"reason": "unauthorized"}},
        ]
    ]


@pytest.mark.phoenix_js("join_refused")
def test_joining_a_secret_topic_is_refused_as_unauthorized(scenario: ScenarioRun) -> None:
    assert scenario.obs["secret"]["status"] == "error"
    assert scenario.obs["secret"]["response"] == {"reason": "unauthorized"}


@pytest.mark.phoenix_js("join_refused")
def test_a_refused_join_is_retried_about_a_second_later_with_a_new_join_ref(
    scenario: ScenarioRun,
) -> None:
    first, retry = scenario.obs["forbidden"], scenario.obs["forbidden_retry"]
    assert retry["status"] == "error"
    assert retry["response"] == {"reason": "unauthorized"}
    assert retry["joinRef"] != first["joinRef"]
    assert 800 <= retry["t"] - first["t"] <= 3000


@pytest.mark.phoenix_js("join_refused")
def test_the_socket_stays_usable_after_refused_joins(scenario: ScenarioRun) -> None:
    assert scenario.obs["room"]["status"] == "ok"
    assert scenario.obs["ping"]["response"] == {"still": "here"}
    assert len(scenario.of("a", "open")) == 1
    assert scenario.of("a", "close") == []


@pytest.mark.phoenix_js("join_crash")
def test_a_join_that_crashes_is_refused_with_join_crashed_and_the_socket_stays_usable(
    scenario: ScenarioRun,
) -> None:
    assert scenario.obs["crash"]["status"] == "error"
    assert scenario.obs["crash"]["response"] == {"reason": "join crashed"}
    assert scenario.obs["room"]["status"] == "ok"
    assert scenario.obs["ping"]["response"] == {"still": "here"}
    assert scenario.of("a", "close") == []


@pytest.mark.phoenix_js("unmatched")
def test_joining_an_unmatched_topic_is_refused_with_unmatched_topic(scenario: ScenarioRun) -> None:
    join = scenario.obs["join"]
    assert join["status"] == "error"
    assert join["response"] == {"reason": "unmatched topic"}
    assert scenario.reply_to("a", join["joinRef"]) == [
        [
            None,
            join["joinRef"],
            scenario.obs["topic"],
            "phx_reply",
            {"status": "error", "response": {"reason": "unmatched topic"}},
        ]
    ]
    assert scenario.obs["room"]["status"] == "ok"
    assert scenario.obs["ping"]["response"] == {"still": "here"}
    assert scenario.of("a", "close") == []


# -- leave, close, error ---------------------------------------------------------------------


@pytest.mark.phoenix_js("leave")
def test_leaving_gets_an_ok_reply_then_phx_close(scenario: ScenarioRun) -> None:
    topic, join_ref, ref = (
        scenario.obs["topic"],
        scenario.obs["join_ref"],
        scenario.obs["leave_ref"],
    )
    assert scenario.sent("a", "phx_leave") == [[join_ref, ref, topic, "phx_leave", {}]]
    assert scenario.obs["leave_reply"] == [
        join_ref,
        ref,
        topic,
        "phx_reply",
        {"status": "ok", "response": {}},
    ]
    in_topic = [f for f in scenario.frames("a", "in") if f[2] == topic]
    events = [f[3] for f in in_topic if f[3] in ("phx_reply", "phx_close")]
    assert events[-2:] == ["phx_reply", "phx_close"]
    assert in_topic[-1][0] == join_ref
    assert scenario.obs["state"] == "closed"


@pytest.mark.phoenix_js("leave")
def test_after_leaving_broadcasts_on_the_topic_are_not_delivered(scenario: ScenarioRun) -> None:
    topic = scenario.obs["topic"]
    b = scenario.users["b"]
    assert [f[4] for f in scenario.received("b", "shout")] == [
        {"n": 1, "user": b},
        {"n": 2, "user": b},
    ]
    assert scenario.obs["sentinel"]["status"] == "ok"
    assert scenario.obs["a_shouts"] == []
    assert scenario.received("a", "shout", topic) == [], "the server still sent shouts to a"
    assert topic not in scenario.obs["channels"]


@pytest.mark.phoenix_js("crash")
def test_a_channel_crash_errors_the_channel_and_it_rejoins_about_a_second_later_with_a_new_join_ref(
    scenario: ScenarioRun,
) -> None:
    topic, first = scenario.obs["topic"], scenario.obs["join"]
    error, rejoin = scenario.obs["chan_error"], scenario.obs["rejoin"]
    (phx_error,) = scenario.received("a", "phx_error")
    assert phx_error[0] == first["joinRef"]
    assert phx_error[2] == topic
    assert rejoin["status"] == "ok"
    assert rejoin["joinRef"] != first["joinRef"]
    assert rejoin["response"] == {"join_ref": rejoin["joinRef"]}
    assert 800 <= rejoin["t"] - error["t"] <= 3000, "phoenix.js rejoins after ~1 s"
    assert scenario.reply_to("a", scenario.obs["crash_ref"]) == [], "a crash sends no reply"
    assert scenario.obs["ping"]["status"] == "ok"
    assert scenario.obs["ping"]["joinRef"] == rejoin["joinRef"]
    assert scenario.of("a", "close") == []


@pytest.mark.phoenix_js("stop")
def test_a_server_stop_replies_then_closes_the_channel_and_the_client_does_not_rejoin(
    scenario: ScenarioRun,
) -> None:
    topic, join_ref = scenario.obs["topic"], scenario.obs["join"]["joinRef"]
    stop = scenario.obs["stop"]
    assert stop["status"] == "ok"
    assert stop["response"] == {"stopping": True}
    in_topic = [f for f in scenario.frames("a", "in") if f[2] == topic]
    assert [f[3] for f in in_topic] == ["phx_reply", "phx_reply", "phx_close"]
    assert in_topic[1][1] == stop["ref"]
    assert in_topic[2][0] == join_ref
    assert len(scenario.of("a", "chan_close")) == 1
    assert scenario.of("a", "chan_error") == []
    assert len(scenario.sent("a", "phx_join")) == 1, "the client rejoined a stopped channel"
    assert scenario.obs["state"] == "closed"
    assert scenario.obs["channels"] == []


@pytest.mark.phoenix_js("leave", "crash", "stop", "rejoin_without_leave")
def test_phx_close_and_phx_error_carry_ref_equal_to_the_join_ref(phoenix_js: ScenarioPool) -> None:
    """PROTOCOL.md §3: server-initiated close and error carry ref = join_ref (as Phoenix does)."""
    frames = []
    for name in ("leave", "crash", "stop", "rejoin_without_leave"):
        run = phoenix_js.result(name).check()
        frames += [f for f in run.frames("a", "in") if f[3] in ("phx_close", "phx_error")]
    assert len(frames) >= 4
    wrong = [f for f in frames if f[1] != f[0] or f[0] is None]
    assert wrong == [], f"close/error frames whose ref is not their join_ref: {wrong}"


# -- duplicate joins and stale join_refs -----------------------------------------------------


@pytest.mark.phoenix_js("duplicate_join")
def test_a_second_channel_for_the_same_topic_replaces_the_first_and_one_channel_remains(
    scenario: ScenarioRun,
) -> None:
    topic = scenario.obs["topic"]
    first, second = scenario.obs["first"], scenario.obs["second"]
    assert first["status"] == second["status"] == "ok"
    assert second["joinRef"] != first["joinRef"]
    closes = scenario.of("a", "chan_close")
    assert [c["topic"] for c in closes] == [topic], "the old channel was closed exactly once"
    assert scenario.obs["first_state"] == "closed"
    assert scenario.obs["second_state"] == "joined"
    assert scenario.obs["channels"] == [topic]
    # one server-side subscription: b's shout reaches a once
    assert scenario.obs["shouts"] == [{"n": 1, "user": scenario.users["b"]}]
    assert len(scenario.received("a", "shout", topic)) == 1
    assert scenario.obs["sentinel"]["joinRef"] == second["joinRef"]


@pytest.mark.phoenix_js("rejoin_without_leave")
def test_a_rejoin_without_leave_replaces_the_channel_and_the_old_phx_close_is_dropped_as_stale(
    scenario: ScenarioRun,
) -> None:
    topic = scenario.obs["topic"]
    old, new = scenario.obs["first"]["joinRef"], scenario.obs["second"]["joinRef"]
    assert old != new
    assert scenario.obs["second"]["status"] == "ok"
    assert scenario.obs["second"]["response"] == {"join_ref": new}
    in_topic = [f for f in scenario.frames("a", "in") if f[2] == topic]
    new_reply = next(i for i, f in enumerate(in_topic) if f[3] == "phx_reply" and f[1] == new)
    old_close = next(i for i, f in enumerate(in_topic) if f[3] == "phx_close")
    assert in_topic[old_close][0] == old, "phx_close goes out with the OLD join_ref"
    assert new_reply < old_close, "the new join's reply goes out before the old channel's close"
    # the client dropped the stale phx_close: its channel is still joined under the new ref
    assert scenario.of("a", "chan_close") == []
    assert scenario.obs["state"] == "joined"
    assert scenario.obs["channels"] == [topic]


@pytest.mark.phoenix_js("rejoin_without_leave")
def test_the_server_ignores_a_push_with_a_stale_join_ref(scenario: ScenarioRun) -> None:
    old, new = scenario.obs["first"]["joinRef"], scenario.obs["second"]["joinRef"]
    stale_ref = scenario.obs["stale_ref"]
    stale = [f for f in scenario.sent("a", "ping") if f[1] == stale_ref]
    assert stale and stale[0][0] == old
    assert scenario.obs["ping"] == {**scenario.obs["ping"], "status": "ok", "joinRef": new}
    # the current ping was sent after the stale one, so a reply to it would have come first
    assert scenario.reply_to("a", stale_ref) == []


# -- heartbeat and reconnects ----------------------------------------------------------------


@pytest.mark.phoenix_js("heartbeat")
def test_heartbeats_every_100_ms_are_all_answered_and_the_socket_stays_open(
    scenario: ScenarioRun,
) -> None:
    replies = scenario.obs["replies"]
    assert len(replies) >= 6
    assert {r["status"] for r in replies} == {"ok"}
    sent = scenario.sent("a", "heartbeat", "phoenix")
    assert all(f[0] is None and f[4] == {} for f in sent)
    assert [r["ref"] for r in replies] == [f[1] for f in sent][: len(replies)]
    for frame in scenario.received("a", "phx_reply", "phoenix"):
        assert frame[0] is None
        assert frame[4] == {"status": "ok", "response": {}}
    assert scenario.obs["connected"] is True
    assert len(scenario.of("a", "connect")) == 1
    assert scenario.of("a", "close") == []


@pytest.mark.phoenix_js("reconnect_after_kick")
def test_a_kicked_socket_is_closed_with_1001_then_reconnects_and_rejoins_with_a_new_join_ref(
    scenario: ScenarioRun,
) -> None:
    (close,) = scenario.of("a", "close")
    assert close["code"] == 1001
    assert len(scenario.of("a", "open")) == 2
    first, second = scenario.obs["room_joins"][:2]
    assert second["status"] == "ok"
    assert second["joinRef"] != first["joinRef"]
    assert second["t"] > close["t"]
    rejoin = [f for f in scenario.sent("a", "phx_join", scenario.obs["topic"])][1]
    assert rejoin[0] == rejoin[1] == second["joinRef"]
    # only a's socket was kicked
    assert scenario.of("b", "close") == []


@pytest.mark.phoenix_js("reconnect_after_kick")
def test_after_reconnecting_the_rejoined_channel_can_shout_again(scenario: ScenarioRun) -> None:
    shout = {"after": "reconnect", "user": scenario.users["a"]}
    assert scenario.obs["a_shouts"] == [shout]
    assert scenario.obs["b_shouts"] == [shout]


# -- binary frames ---------------------------------------------------------------------------


@pytest.mark.phoenix_js("binary")
def test_a_binary_ping_gets_a_binary_reply_kind_1_with_the_same_bytes(
    scenario: ScenarioRun,
) -> None:
    topic, sent = scenario.obs["topic"], scenario.obs["sent"]
    ping = scenario.obs["ping"]
    assert ping["status"] == "ok"
    assert ping["response"] == {"$bytes": sent}
    out = [decode_from_client(b) for b in scenario.binary_frames("a", "out")]
    assert {
        "kind": 0,
        "join_ref": ping["joinRef"],
        "ref": ping["ref"],
        "topic": topic,
        "event": "ping",
        "data": sent,
    } in out
    replies = [
        f for f in map(decode_from_server, scenario.binary_frames("a", "in")) if f["kind"] == 1
    ]
    assert replies == [
        {
            "kind": 1,
            "join_ref": ping["joinRef"],
            "ref": ping["ref"],
            "topic": topic,
            "status": "ok",
            "data": sent,
        }
    ]


@pytest.mark.phoenix_js("binary")
def test_a_binary_direct_push_is_sent_as_kind_0_with_the_join_ref(scenario: ScenarioRun) -> None:
    topic = scenario.obs["test_topic"]
    assert scenario.obs["pushed"] == [{"$bytes": [9, 8, 7]}]
    pushes = [
        f for f in map(decode_from_server, scenario.binary_frames("a", "in")) if f["kind"] == 0
    ]
    (join,) = scenario.sent("a", "phx_join", topic)
    assert pushes == [
        {"kind": 0, "join_ref": join[0], "topic": topic, "event": "pushed", "data": [9, 8, 7]}
    ]


@pytest.mark.phoenix_js("binary")
def test_a_binary_shout_is_broadcast_as_kind_2_to_every_member(scenario: ScenarioRun) -> None:
    topic = scenario.obs["topic"]
    assert scenario.obs["a_shouts"] == [{"$bytes": [1, 2, 3, 250]}]
    assert scenario.obs["b_shouts"] == [{"$bytes": [1, 2, 3, 250]}]
    expected = {"kind": 2, "topic": topic, "event": "shout", "data": [1, 2, 3, 250]}
    for label in ("a", "b"):
        frames = [decode_from_server(b) for b in scenario.binary_frames(label, "in")]
        assert [f for f in frames if f["kind"] == 2] == [expected]
