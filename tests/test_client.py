"""The Python Phoenix client (``switchboard.client``): its sans-I/O session, then both faces
against a real node."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from switchboard.client import AsyncClient, Client, NoFrame, ReplyError, Session
from tests.support.clients import open_client, run
from tests.support.processes import ServerProcess


def test_a_join_uses_its_own_ref_as_join_ref_and_later_pushes_carry_it() -> None:
    session = Session()
    join_ref, join = session.join_frame("room:a", {"x": 1})
    ref, push = session.push_frame("room:a", "ping")
    assert join == [join_ref, join_ref, "room:a", "phx_join", {"x": 1}]
    assert push == [join_ref, ref, "room:a", "ping", {}] and ref != join_ref


def test_a_push_may_name_its_join_ref_or_none_and_other_topics_get_none() -> None:
    session = Session()
    session.join_frame("room:a")
    assert session.push_frame("room:a", "ping", join_ref=None)[1][0] is None
    assert session.push_frame("room:a", "ping", join_ref="99")[1][0] == "99"
    assert session.push_frame("room:b", "ping")[1][0] is None


def test_a_binary_push_has_the_kind_0_layout() -> None:
    session = Session()
    join_ref, _ = session.join_frame("room:bin")
    ref, data = session.binary_push_frame("room:bin", "ping", b"\x00\xff")
    fields = [join_ref, ref, "room:bin", "ping"]
    assert data == bytes([0, *map(len, fields)]) + "".join(fields).encode() + b"\x00\xff"


def test_text_that_is_not_a_json_array_is_kept_as_text() -> None:
    assert Session.decode(b'[null,"1","t","e",{}]', text=True) == [None, "1", "t", "e", {}]
    assert Session.decode("not json", text=True) == "not json"
    assert Session.decode(b"\x01\x02", text=False) == b"\x01\x02"


def test_a_wait_that_runs_out_fails_with_the_last_frames_seen(server: ServerProcess) -> None:
    with ExitStack() as stack:
        client = open_client(stack, server, "waiter")
        client.joined("room:waits")
        client.push("room:waits", "ping", {"marker": 7})
        with pytest.raises(NoFrame, match="marker") as failed:
            client.event("room:waits", "never", timeout=0.5)
        assert isinstance(failed.value, AssertionError)
        assert client.kept(), "frames that matched nothing stay for later waits"


def test_joined_raises_with_the_error_reply(server: ServerProcess) -> None:
    with ExitStack() as stack:
        client = open_client(stack, server, "refused")
        with pytest.raises(ReplyError) as refused:
            client.joined("room:forbidden")
        assert refused.value.reply[4]["response"] == {"reason": "unauthorized"}


def test_both_faces_report_a_refused_upgrade_with_its_status_and_body(
    server: ServerProcess,
) -> None:
    url = f"{server.ws_url}?vsn=2.0.0"  # no token
    blocking = Client.refusal(url)
    asynchronous = run(AsyncClient.refusal(url))
    assert (
        (blocking.status, blocking.body) == (asynchronous.status, asynchronous.body) == (403, b"")
    )
