"""Channels over real sockets: the room and test channels, as phoenix.js would see them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from switchboard.client import AsyncClient
from tests.server.nodes import node
from tests.support.clients import run
from tests.support.processes import ServerProcess

OK = {"status": "ok", "response": {}}


def error(reason: str) -> dict[str, object]:
    return {"status": "error", "response": {"reason": reason}}


@pytest.fixture(scope="module")
def two_channel_node() -> Iterator[ServerProcess]:
    with node({"SWITCHBOARD_MAX_CHANNELS": "2"}) as running:
        yield running


async def peers(server: ServerProcess, *users: str) -> list[AsyncClient]:
    connecting = (AsyncClient.connect(server.socket_url(u)) for u in users)
    return list(await asyncio.gather(*connecting))


# --- heartbeat


def test_a_heartbeat_is_answered_with_the_exact_frame(server: ServerProcess) -> None:
    async def scenario() -> None:
        [peer] = await peers(server, "alice")
        await peer.send_raw('[null,"8","phoenix","heartbeat",{}]')
        assert (
            await peer.connection.recv()
            == '[null,"8","phoenix","phx_reply",{"status":"ok","response":{}}]'
        )
        await peer.close()

    run(scenario())


# --- the room channel


def test_a_room_join_replies_ok_with_join_ref_equal_to_ref(server: ServerProcess) -> None:
    async def scenario() -> None:
        [peer] = await peers(server, "alice")
        await peer.send(["4", "4", "room:lobby", "phx_join", {"user": "a"}])
        reply = await peer.recv()
        assert reply[:4] == ["4", "4", "room:lobby", "phx_reply"]
        # room:* keeps history: the reply says where the topic is (see test_history.py).
        assert reply[4]["status"] == "ok"
        assert set(reply[4]["response"]) == {"position", "recovered"}
        await peer.close()

    run(scenario())


def test_a_ping_reply_echoes_the_payload_with_join_ref_and_ref(server: ServerProcess) -> None:
    async def scenario() -> None:
        [peer] = await peers(server, "alice")
        await peer.send(["12", "12", "room:lobby", "phx_join", {}])
        await peer.reply("12")
        await peer.send(["12", "15", "room:lobby", "ping", {"n": [1, 2, {"x": None}]}])
        assert await peer.recv() == [
            "12",
            "15",
            "room:lobby",
            "phx_reply",
            {"status": "ok", "response": {"n": [1, 2, {"x": None}]}},
        ]
        await peer.close()

    run(scenario())


def test_a_shout_reaches_every_member_including_the_sender(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice, bob = await peers(server, "alice", "bob")
        await alice.joined("room:shout")
        await bob.joined("room:shout")
        await alice.push("room:shout", "shout", {"body": "hi"}, join_ref="1")
        got = await alice.event("room:shout", "shout")
        # The ref is the shout's position in the room's history: a string, the same for all.
        assert isinstance(got[1], str) and not got[1].isdigit()
        assert got == [None, got[1], "room:shout", "shout", {"body": "hi", "user": "alice"}]
        assert await bob.event("room:shout", "shout") == got
        await asyncio.gather(alice.close(), bob.close())

    run(scenario())


def test_shout_from_reaches_the_others_but_not_the_sender(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice, bob, alice_again = await peers(server, "alice", "bob", "alice")
        for peer in (alice, bob, alice_again):
            await peer.joined("room:from")
        await alice.push("room:from", "shout_from", {"body": "hi"}, join_ref="1")
        expected = await bob.event("room:from", "shout")
        assert expected == [
            None,
            expected[1],
            "room:from",
            "shout",
            {"body": "hi", "user": "alice"},
        ]
        # Another socket of the same user is not the sender: it gets the shout too.
        assert await alice_again.event("room:from", "shout") == expected
        # The sender's own frames up to a later ping reply hold no shout.
        await alice.call("room:from", "ping", {}, join_ref="1")
        assert alice.kept() == []
        await asyncio.gather(alice.close(), bob.close(), alice_again.close())

    run(scenario())


def test_nobody_can_shout_as_someone_else(server: ServerProcess) -> None:
    """The server stamps ``user`` with the sender's authenticated id over what the client
    claims; the rest of the payload arrives exactly as sent, on shout and shout_from."""

    async def scenario() -> None:
        mallory, bob = await peers(server, "mallory", "bob")
        await mallory.joined("room:spoof")
        await bob.joined("room:spoof")
        claim = {"user": "alice", "body": "send me your password", "extra": [1, {"x": None}]}
        for event in ("shout", "shout_from"):
            await mallory.push("room:spoof", event, claim, join_ref="1")
            got = await bob.event("room:spoof", "shout")
            assert got == [
                None,
                got[1],  # its position in the room's history
                "room:spoof",
                "shout",
                {"user": "mallory", "body": "send me your password", "extra": [1, {"x": None}]},
            ]
        await mallory.push("room:spoof", "shout", {"body": "no name given"}, join_ref="1")
        shout = await bob.event("room:spoof", "shout")
        assert shout[4] == {"body": "no name given", "user": "mallory"}
        await asyncio.gather(mallory.close(), bob.close())

    run(scenario())


def test_room_forbidden_refuses_the_join_as_unauthorized(server: ServerProcess) -> None:
    async def scenario() -> None:
        [peer] = await peers(server, "alice")
        ref = await peer.join("room:forbidden")
        assert await peer.reply(ref) == [
            ref,
            ref,
            "room:forbidden",
            "phx_reply",
            error("unauthorized"),
        ]
        await peer.close()

    run(scenario())


def test_secret_topics_refuse_every_join(server: ServerProcess) -> None:
    async def scenario() -> None:
        [peer] = await peers(server, "alice")
        ref = await peer.join("secret:plans")
        assert await peer.reply(ref) == [
            ref,
            ref,
            "secret:plans",
            "phx_reply",
            error("unauthorized"),
        ]
        await peer.close()

    run(scenario())


def test_an_unmatched_topic_is_refused_with_a_null_join_ref(server: ServerProcess) -> None:
    async def scenario() -> None:
        [peer] = await peers(server, "alice")
        await peer.send(["7", "7", "nowhere:x", "phx_join", {}])
        assert await peer.recv() == [None, "7", "nowhere:x", "phx_reply", error("unmatched topic")]
        await peer.send([None, "8", "room:not-joined", "ping", {}])
        assert await peer.recv() == [
            None,
            "8",
            "room:not-joined",
            "phx_reply",
            error("unmatched topic"),
        ]
        await peer.close()

    run(scenario())


def test_an_unknown_event_gets_an_error_reply_and_the_socket_stays(server: ServerProcess) -> None:
    async def scenario() -> None:
        [peer] = await peers(server, "alice")
        join_ref = await peer.joined("room:lobby")
        reply = await peer.call("room:lobby", "dance", {}, join_ref=join_ref)
        assert reply[4] == error("unknown event 'dance'")
        pong = await peer.call("room:lobby", "ping", {"ok": 1}, join_ref=join_ref)
        assert pong[4] == {"status": "ok", "response": {"ok": 1}}
        await peer.close()

    run(scenario())


def test_a_binary_ping_gets_a_binary_kind_1_reply(server: ServerProcess) -> None:
    async def scenario() -> None:
        [peer] = await peers(server, "alice")
        join_ref = await peer.joined("room:bin")
        ref = await peer.push_binary("room:bin", "ping", b"\x00\x01\xfe\xff")
        reply = await peer.expect("binary reply", lambda f: isinstance(f, bytes))
        header = bytes([1, len(join_ref), len(ref), len("room:bin"), 2])
        assert (
            reply
            == header + join_ref.encode() + ref.encode() + b"room:bin" + b"ok" + b"\x00\x01\xfe\xff"
        )
        await peer.close()

    run(scenario())


def test_a_binary_shout_is_broadcast_as_kind_2(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice, bob = await peers(server, "alice", "bob")
        await alice.joined("room:binshout")
        await bob.joined("room:binshout")
        await alice.push_binary("room:binshout", "shout", b"\x07\x08")
        frame = await bob.expect("binary shout", lambda f: isinstance(f, bytes))
        assert (
            frame == bytes([2, len("room:binshout"), 5]) + b"room:binshout" + b"shout" + b"\x07\x08"
        )
        await asyncio.gather(alice.close(), bob.close())

    run(scenario())


def test_after_leaving_a_room_its_shouts_no_longer_arrive(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice, bob = await peers(server, "alice", "bob")
        alice_ref = await alice.joined("room:leave")
        bob_ref = await bob.joined("room:leave")
        await bob.joined("room:other")
        ref = await bob.push("room:leave", "phx_leave", {}, join_ref=bob_ref)
        assert await bob.recv() == [bob_ref, ref, "room:leave", "phx_reply", OK]
        close = await bob.recv()
        assert isinstance(close, list)
        assert (close[0], close[2:]) == (bob_ref, ["room:leave", "phx_close", {}])
        await alice.push("room:leave", "shout", {"n": 1}, join_ref=alice_ref)
        await alice.event("room:leave", "shout")
        await bob.call("room:other", "ping", {})  # anything already sent arrives before this
        assert bob.kept() == []
        await asyncio.gather(alice.close(), bob.close())

    run(scenario())


def test_a_leave_of_a_topic_not_joined_still_gets_ok(server: ServerProcess) -> None:
    async def scenario() -> None:
        [peer] = await peers(server, "alice")
        await peer.send(["3", "9", "room:never", "phx_leave", {}])
        assert await peer.recv() == ["3", "9", "room:never", "phx_reply", OK]
        await peer.close()

    run(scenario())


def test_a_duplicate_join_replies_to_the_new_one_then_closes_the_old_join_ref(
    server: ServerProcess,
) -> None:
    async def scenario() -> None:
        alice, bob = await peers(server, "alice", "bob")
        old = await alice.joined("room:dup")
        new = await alice.joined("room:dup")
        close = await alice.recv()
        assert isinstance(close, list)
        assert (close[0], close[2:]) == (old, ["room:dup", "phx_close", {}])
        # A push still carrying the old join_ref is stale: no reply, no effect.
        await alice.push("room:dup", "ping", {}, join_ref=old)
        assert (await alice.call("room:dup", "ping", {"n": 2}, join_ref=new))[4]["status"] == "ok"
        assert alice.kept() == []
        # Only one channel is left: a shout arrives once.
        await bob.joined("room:dup")
        await bob.push("room:dup", "shout", {"once": True}, join_ref="1")
        await alice.event("room:dup", "shout")
        await alice.call("room:dup", "ping", {}, join_ref=new)
        assert alice.kept() == []
        await asyncio.gather(alice.close(), bob.close())

    run(scenario())


# --- the test channel


def test_a_direct_push_carries_the_join_ref_and_a_null_ref(server: ServerProcess) -> None:
    async def scenario() -> None:
        [peer] = await peers(server, "alice")
        join_ref = await peer.joined("test:push")
        await peer.push("test:push", "push", {"hello": "you"}, join_ref=join_ref)
        assert await peer.recv() == [join_ref, None, "test:push", "pushed", {"hello": "you"}]
        await peer.close()

    run(scenario())


def test_a_crashing_join_is_refused_as_join_crashed(server: ServerProcess) -> None:
    async def scenario() -> None:
        [peer] = await peers(server, "alice")
        ref = await peer.join("test:boom", {"crash": True})
        assert await peer.reply(ref) == [ref, ref, "test:boom", "phx_reply", error("join crashed")]
        assert (await peer.reply(await peer.heartbeat()))[4] == OK
        await peer.joined("test:boom")
        await peer.close()

    run(scenario())


def test_a_channel_stop_replies_then_sends_phx_close(server: ServerProcess) -> None:
    async def scenario() -> None:
        [peer] = await peers(server, "alice")
        join_ref = await peer.joined("test:stop")
        ref = await peer.push("test:stop", "stop", {}, join_ref=join_ref)
        assert await peer.recv() == [
            join_ref,
            ref,
            "test:stop",
            "phx_reply",
            {"status": "ok", "response": {"stopping": True}},
        ]
        close = await peer.recv()
        assert isinstance(close, list)
        assert (close[0], close[2:]) == (join_ref, ["test:stop", "phx_close", {}])
        await peer.close()

    run(scenario())


def test_a_channel_crash_errors_that_channel_only(server: ServerProcess) -> None:
    async def scenario() -> None:
        [peer] = await peers(server, "alice")
        crashing = await peer.joined("test:crash")
        steady = await peer.joined("test:steady")
        await peer.push("test:crash", "crash", {}, join_ref=crashing)
        frame = await peer.event("test:crash", "phx_error")
        assert (frame[0], frame[4]) == (crashing, {"reason": "channel_crash"})
        reply = await peer.call("test:steady", "ping", {"still": "here"}, join_ref=steady)
        assert reply[4] == {"status": "ok", "response": {"still": "here"}}
        # The crashed topic is free again: the client's rejoin works.
        await peer.joined("test:crash")
        await peer.close()

    run(scenario())


def test_a_slow_handle_in_delays_neither_heartbeats_nor_other_channels(
    server: ServerProcess,
) -> None:
    async def scenario() -> None:
        [peer] = await peers(server, "alice")
        slow = await peer.joined("test:slow")
        fast = await peer.joined("test:fast")
        loop = asyncio.get_running_loop()
        started = loop.time()
        sleep_ref = await peer.push("test:slow", "sleep", {"ms": 500}, join_ref=slow)
        queued_ref = await peer.push("test:slow", "ping", {"after": "sleep"}, join_ref=slow)
        ping = await peer.call("test:fast", "ping", {}, join_ref=fast)
        ping_at = loop.time() - started
        heartbeat = await peer.reply(await peer.heartbeat())
        heartbeat_at = loop.time() - started
        await peer.reply(sleep_ref, timeout=3)
        sleep_at = loop.time() - started
        queued = await peer.reply(queued_ref)
        assert ping[4]["status"] == heartbeat[4]["status"] == "ok"
        assert queued[4] == {"status": "ok", "response": {"after": "sleep"}}
        assert ping_at < 0.25 and heartbeat_at < 0.25, (ping_at, heartbeat_at)
        assert sleep_at >= 0.45
        await peer.close()

    run(scenario())


def test_a_disconnect_broadcast_closes_every_socket_of_that_user_with_1001(
    server: ServerProcess,
) -> None:
    async def scenario() -> None:
        first, second, other = await peers(server, "kicked", "kicked", "bystander")
        join_ref = await first.joined("test:kick")
        await second.joined("room:kick")
        await other.joined("room:kick")
        await first.push("test:kick", "kick", {}, join_ref=join_ref)
        codes = await asyncio.gather(first.closed(), second.closed())
        assert codes == [1001, 1001]
        assert (await other.reply(await other.heartbeat()))[4] == OK
        assert (await other.call("room:kick", "ping", {}, join_ref="1"))[4]["status"] == "ok"
        # The user may come back.
        [again] = await peers(server, "kicked")
        assert (await again.reply(await again.heartbeat()))[4] == OK
        await asyncio.gather(other.close(), again.close())

    run(scenario())


def test_a_disconnect_cancels_a_hook_in_progress_without_errors(server: ServerProcess) -> None:
    async def scenario() -> None:
        first, second = await peers(server, "sleepy", "sleepy")
        sleeper = await first.joined("test:sleepy")
        kicker = await second.joined("test:kicker")
        await first.push("test:sleepy", "sleep", {"ms": 3000}, join_ref=sleeper)
        await first.reply(await first.heartbeat())  # the sleep has started
        await second.push("test:kicker", "kick", {}, join_ref=kicker)
        assert await asyncio.gather(first.closed(), second.closed()) == [1001, 1001]
        [again] = await peers(server, "sleepy")
        assert (await again.reply(await again.heartbeat()))[4] == OK
        await again.close()

    errors_before = len([e for e in server.logs if e.get("level") == "error"])
    run(scenario())
    errors = [e for e in server.logs if e.get("level") == "error"][errors_before:]
    assert errors == []


# --- channel limit


def test_joins_past_the_channel_limit_are_refused_until_one_is_left(
    two_channel_node: ServerProcess,
) -> None:
    async def scenario() -> None:
        [peer] = await peers(two_channel_node, "alice")
        first = await peer.joined("room:1")
        await peer.joined("room:2")
        ref = await peer.join("room:3")
        assert await peer.reply(ref) == [
            ref,
            ref,
            "room:3",
            "phx_reply",
            error("too many channels joined"),
        ]
        await peer.joined("room:2")  # rejoining a joined topic takes no new slot
        await peer.event("room:2", "phx_close")
        await peer.call("room:1", "phx_leave", {}, join_ref=first)
        await peer.event("room:1", "phx_close")
        await peer.joined("room:3")
        await peer.close()

    run(scenario())
