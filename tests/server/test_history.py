"""History and recovery over real sockets, as a client sees them (the demo ``room:*`` keeps
history; ``test:*`` does not)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from switchboard.client import AsyncClient
from switchboard.server.pubsub import Position
from tests.server.nodes import node
from tests.support.clients import run
from tests.support.nodes import unique_user
from tests.support.processes import ServerProcess

API_KEY = "history-test-key"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with node({"SWITCHBOARD_API_KEY": API_KEY, "SWITCHBOARD_HISTORY_SIZE": "5"}) as running:
        yield running


@pytest.fixture(scope="module")
def no_history() -> Iterator[ServerProcess]:
    with node({"SWITCHBOARD_HISTORY_SIZE": "0"}) as running:
        yield running


async def peer(server: ServerProcess) -> AsyncClient:
    return await AsyncClient.connect(server.socket_url(unique_user("u")))


async def join(peer: AsyncClient, topic: str, payload: Any = None) -> dict[str, Any]:
    reply = await peer.call(topic, "phx_join", payload)
    assert reply[4]["status"] == "ok", reply
    response: dict[str, Any] = reply[4]["response"]
    return response


async def shouts(peer: AsyncClient, topic: str, count: int) -> list[list[Any]]:
    return [await peer.event(topic, "shout") for _ in range(count)]


def test_every_join_reply_on_a_history_topic_says_where_the_topic_is(
    server: ServerProcess,
) -> None:
    async def scenario() -> None:
        topic = f"room:{unique_user('pos')}"
        alice = await peer(server)
        first = await join(alice, topic)
        assert first["recovered"] is False
        position = Position.parse(first["position"])
        assert position is not None and position.offset == 0
        await alice.push(topic, "shout", {"n": 1}, join_ref="1")
        (frame,) = await shouts(alice, topic, 1)
        bob = await peer(server)
        assert (await join(bob, topic))["position"] == frame[1]
        assert "position" not in await join(bob, f"test:{unique_user('plain')}")
        await asyncio.gather(alice.close(), bob.close())

    run(scenario())


def test_a_join_since_a_position_gets_the_missed_shouts_after_its_reply_then_live_ones(
    server: ServerProcess,
) -> None:
    async def scenario() -> None:
        topic = f"room:{unique_user('since')}"
        alice = await peer(server)
        join_ref = await alice.joined(topic)
        for n in range(1, 5):
            await alice.push(topic, "shout", {"n": n}, join_ref=join_ref)
        seen = await shouts(alice, topic, 4)

        bob = await peer(server)
        ref = bob.next_ref()
        await bob.send([ref, ref, topic, "phx_join", {"since": seen[1][1]}])
        reply = await bob.recv()
        assert reply[:4] == [ref, ref, topic, "phx_reply"]
        assert reply[4]["response"] == {"position": seen[3][1], "recovered": True}
        assert [await bob.recv() for _ in range(2)] == seen[2:]
        await alice.push(topic, "shout", {"n": 5}, join_ref=join_ref)
        live = await bob.recv()
        assert live[4]["n"] == 5 and live == (await shouts(alice, topic, 1))[0]
        await asyncio.gather(alice.close(), bob.close())

    run(scenario())


@pytest.mark.parametrize("since", ["too-old", "nonsense", 42, None])
def test_a_join_since_a_position_not_kept_or_not_a_position_succeeds_without_recovering(
    server: ServerProcess, since: object
) -> None:
    async def scenario() -> None:
        topic = f"room:{unique_user('old')}"
        alice = await peer(server)
        join_ref = await alice.joined(topic)
        for n in range(1, 9):  # the node keeps 5
            await alice.push(topic, "shout", {"n": n}, join_ref=join_ref)
        seen = await shouts(alice, topic, 8)
        asked = seen[0][1] if since == "too-old" else since
        bob = await peer(server)
        response = await join(bob, topic, {"since": asked})
        assert response == {"position": seen[-1][1], "recovered": False}
        await bob.call(topic, "ping", {}, join_ref="1")
        assert bob.kept() == [], "nothing is replayed when nothing can be recovered"
        await asyncio.gather(alice.close(), bob.close())

    run(scenario())


def test_api_broadcasts_are_kept_and_binary_shouts_are_live_only(server: ServerProcess) -> None:
    async def scenario() -> None:
        topic = f"room:{unique_user('api')}"
        alice = await peer(server)
        join_ref = await alice.joined(topic)
        probe = await peer(server)
        start = (await join(probe, topic))["position"]
        await probe.close()
        response = await asyncio.to_thread(
            httpx.post,
            f"{server.url}/api/broadcast",
            json={"topic": topic, "event": "news", "payload": {"k": 1}},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        assert response.status_code == 202, response.text
        news = await alice.event(topic, "news")
        await alice.push_binary(topic, "shout", b"\x01\x02", join_ref=join_ref)
        binary = await alice.recv()
        assert binary == bytes([2, len(topic), 5]) + topic.encode() + b"shout\x01\x02"
        bob = await peer(server)
        ref = bob.next_ref()
        await bob.send([ref, ref, topic, "phx_join", {"since": start}])
        reply = await bob.recv()
        assert reply[4]["response"] == {"position": news[1], "recovered": True}
        assert await bob.recv() == news
        await bob.call(topic, "ping", {}, join_ref=ref)
        assert bob.kept() == [], "the binary shout is not replayed"
        await asyncio.gather(alice.close(), bob.close())

    run(scenario())


def test_with_history_off_joins_and_shouts_carry_no_position(no_history: ServerProcess) -> None:
    async def scenario() -> None:
        topic = f"room:{unique_user('off')}"
        alice = await peer(no_history)
        assert await join(alice, topic, {"since": "m1.1"}) == {}
        await alice.push(topic, "shout", {"n": 1}, join_ref="1")
        frame = await alice.event(topic, "shout")
        assert frame[:4] == [None, None, topic, "shout"] and frame[4]["n"] == 1
        await alice.close()

    run(scenario())


def test_a_position_from_before_the_node_restarted_does_not_recover(server: ServerProcess) -> None:
    async def scenario(running: ServerProcess) -> str:
        topic = "room:restarted"
        alice = await peer(running)
        await join(alice, topic)
        await alice.push(topic, "shout", {"n": 1}, join_ref="1")
        (frame,) = await shouts(alice, topic, 1)
        await alice.close()
        return str(frame[1])

    with node() as before:
        position = run(scenario(before))

    async def rejoin() -> None:
        bob = await peer(server)
        response = await join(bob, "room:restarted", {"since": position})
        assert response["recovered"] is False
        assert Position.parse(response["position"]) != Position.parse(position)
        await bob.close()

    run(rejoin())
