"""History and joins: the contract every backend meets, run against each of them.

Topics starting with ``h:`` keep history (see helpers). A :class:`Member` joins as a
channel does, so its items are exactly what its client would be sent: the replay of what
it asked to recover, then every broadcast after the position it joined at.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from switchboard.server.pubsub import HistoryLimits, Position, PubSub, Unavailable
from tests.pubsub.conftest import MakeHistoryBackend
from tests.pubsub.helpers import Cluster, Member, Recorder, join


def shout(node: PubSub, topic: str, n: int, exclude: object = None) -> None:
    node.broadcast(topic, "shout", {"n": n}, exclude=exclude)  # type: ignore[arg-type]


def cluster(make: MakeHistoryBackend, size: int, limits: HistoryLimits | None = None) -> Cluster:
    return Cluster(lambda: make(limits), size)


def test_every_node_gets_a_topics_broadcasts_in_one_order_with_the_same_growing_positions(
    make_history_backend: MakeHistoryBackend,
) -> None:
    async def scenario() -> None:
        async with cluster(make_history_backend, 3) as nodes:
            members = [Member(f"m{i}") for i in range(3)]
            for node, member in zip(nodes.nodes, members, strict=True):
                await join(node, "h:room", member)
            for round_ in range(20):  # every node publishes, interleaved
                for i, node in enumerate(nodes.nodes):
                    shout(node, "h:room", 100 * i + round_)
            for member in members:
                await member.wait_for(60)
            await nodes.barrier()

            first = members[0]
            epoch = first.positions[0].epoch
            assert first.positions == [Position(epoch, offset) for offset in range(1, 61)]
            for member in members[1:]:
                assert member.items == first.items  # same frames, same order, same refs
            frame = first.items[0][1]
            assert isinstance(frame, str)
            ref = json.loads(frame)[1]
            assert isinstance(ref, str) and not ref.isdigit()

    asyncio.run(scenario())


def test_a_join_reports_the_topics_position_even_before_anything_was_published(
    make_history_backend: MakeHistoryBackend,
) -> None:
    async def scenario() -> None:
        async with cluster(make_history_backend, 2) as nodes:
            a, b = nodes.nodes
            early = await join(a, "h:new", Member())
            assert early.position.offset == 0 and not early.recovered and early.replay == []
            listener = Member()
            await join(b, "h:new", listener)
            for n in range(3):
                shout(a, "h:new", n)
            await listener.wait_for(3)
            late = await join(b, "h:new", Member())
            assert late.position == Position(early.position.epoch, 3)

    asyncio.run(scenario())


def test_a_join_since_a_kept_position_gets_what_came_after_it_once_in_order(
    make_history_backend: MakeHistoryBackend,
) -> None:
    async def scenario() -> None:
        async with cluster(make_history_backend, 2) as nodes:
            a, b = nodes.nodes
            first = Member("first")
            await join(b, "h:room", first)
            for n in range(1, 6):
                shout(a, "h:room", n)
            await first.wait_for(5)
            since = first.positions[1]  # it saw 1 and 2, then dropped

            back = Member("back")
            joined = await join(b, "h:room", back, str(since))
            assert joined.recovered and joined.position == first.positions[-1]
            shout(a, "h:room", 6)
            await back.wait_for(4)
            await first.wait_for(6)
            await nodes.barrier()
            assert back.payloads == [{"n": n} for n in (3, 4, 5, 6)]
            assert back.items == first.items[2:]

    asyncio.run(scenario())


def test_a_join_since_the_latest_position_recovers_with_nothing_to_replay(
    make_history_backend: MakeHistoryBackend,
) -> None:
    async def scenario() -> None:
        async with cluster(make_history_backend, 1) as nodes:
            (a,) = nodes.nodes
            first = Member()
            await join(a, "h:room", first)
            shout(a, "h:room", 1)
            await first.wait_for(1)
            joined = await join(a, "h:room", Member(), str(first.positions[-1]))
            assert joined.recovered and joined.replay == []

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "since",
    [
        "older",  # older than what is kept
        "other-epoch",
        "ahead",
        "junk",
        "12",
        12,
        {"offset": 1},
        "",
        "m1.-1",
    ],
)
def test_a_join_since_a_position_not_kept_any_more_or_not_a_position_does_not_recover(
    make_history_backend: MakeHistoryBackend, since: object
) -> None:
    async def scenario() -> None:
        limits = HistoryLimits(size=3)
        async with cluster(make_history_backend, 1, limits) as nodes:
            (a,) = nodes.nodes
            first = Member()
            await join(a, "h:room", first)
            for n in range(10):
                shout(a, "h:room", n)
            await first.wait_for(10)
            latest = first.positions[-1]
            named = {
                "older": str(first.positions[5]),  # 6 is gone: only 8, 9, 10 are kept
                "other-epoch": f"z{latest.epoch}.{latest.offset - 1}",
                "ahead": f"{latest.epoch}.{latest.offset + 1}",
            }
            asked = named.get(since, since) if isinstance(since, str) else since
            joined = await join(a, "h:room", Member(), asked)
            assert (joined.recovered, joined.replay) == (False, [])
            assert joined.position == latest
            kept = await join(a, "h:room", Member(), str(first.positions[6]))
            assert kept.recovered and len(kept.replay) == 3

    asyncio.run(scenario())


def test_the_seam_between_replay_and_live_broadcasts_has_no_gap_and_no_duplicate(
    make_history_backend: MakeHistoryBackend,
) -> None:
    """Joins land while another node publishes as fast as it can: each joiner, recovering
    from a position a few broadcasts back, gets every offset after it exactly once."""

    async def scenario() -> None:
        async with cluster(make_history_backend, 2, HistoryLimits(size=1000)) as nodes:
            a, b = nodes.nodes
            watcher = Member("watcher")
            await join(b, "h:busy", watcher)
            published = 0
            stop = asyncio.Event()

            async def publish() -> None:
                nonlocal published
                while not stop.is_set():
                    published += 1
                    shout(a, "h:busy", published)
                    if published % 10 == 0:  # as fast as the backend takes them
                        await asyncio.sleep(0.001)

            publisher = asyncio.create_task(publish())
            joiners = []
            for i in range(30):
                await watcher.wait_for(len(watcher.items) + 5)
                since = watcher.positions[-3]
                joiner = Member(f"joiner{i}")
                joined = await join(b, "h:busy", joiner, str(since))
                assert joined.recovered, joined
                joiners.append((since, joiner))
            stop.set()
            await publisher
            await watcher.wait_for(published)
            await nodes.barrier()
            end = watcher.positions[-1]
            for since, joiner in joiners:
                offsets = [p.offset for p in joiner.positions]
                assert offsets == list(range(since.offset + 1, end.offset + 1)), joiner.name

    asyncio.run(scenario())


def test_broadcast_from_skips_the_sender_and_no_one_else_on_a_history_topic(
    make_history_backend: MakeHistoryBackend,
) -> None:
    async def scenario() -> None:
        async with cluster(make_history_backend, 2) as nodes:
            a, b = nodes.nodes
            sender, neighbour, remote = Member("sender"), Member("neighbour"), Member("remote")
            await join(a, "h:typing", sender)
            await join(a, "h:typing", neighbour)
            await join(b, "h:typing", remote)
            shout(a, "h:typing", 1, exclude=sender)
            shout(a, "h:typing", 2)
            await neighbour.wait_for(2)
            await remote.wait_for(2)
            await nodes.barrier()
            assert sender.payloads == [{"n": 2}]
            assert neighbour.items == remote.items

    asyncio.run(scenario())


def test_local_broadcasts_such_as_presence_diffs_are_not_history(
    make_history_backend: MakeHistoryBackend,
) -> None:
    async def scenario() -> None:
        async with cluster(make_history_backend, 1) as nodes:
            (a,) = nodes.nodes
            member = Member()
            before = await join(a, "h:room", member)
            a.local_broadcast("h:room", "presence_diff", '[null,null,"h:room","presence_diff",{}]')
            assert member.items == [("presence_diff", '[null,null,"h:room","presence_diff",{}]')]
            after = await join(a, "h:room", Member())
            assert after.position == before.position

    asyncio.run(scenario())


def test_a_binary_broadcast_on_a_history_topic_goes_live_and_is_not_kept(
    make_history_backend: MakeHistoryBackend,
) -> None:
    async def scenario() -> None:
        async with cluster(make_history_backend, 2) as nodes:
            a, b = nodes.nodes
            here, there = Member("here"), Member("there")
            before = await join(a, "h:bin", here)
            await join(b, "h:bin", there)
            a.broadcast("h:bin", "blob", b"\x00\x01")
            await there.wait_for(1)
            assert here.items == there.items == [("blob", bytes([2, 5, 4]) + b"h:binblob\x00\x01")]
            after = await join(a, "h:bin", Member())
            assert after.position == before.position

    asyncio.run(scenario())


def test_topics_without_history_join_and_broadcast_as_before(
    make_history_backend: MakeHistoryBackend,
) -> None:
    async def scenario() -> None:
        async with cluster(make_history_backend, 2) as nodes:
            a, b = nodes.nodes
            plain = Recorder("plain")
            assert await b.join("room:plain", plain) is None
            a.broadcast("room:plain", "shout", {"n": 1})
            await plain.wait_for(1)
            assert plain.received == [("shout", '[null,null,"room:plain","shout",{"n":1}]')]

    asyncio.run(scenario())


# -- point 4: a join is really subscribed ------------------------------------------------------


def test_a_broadcast_published_anywhere_right_after_a_join_returns_reaches_it(
    make_history_backend: MakeHistoryBackend,
) -> None:
    """Under load (another node floods a busy topic), each of many first joins of a fresh
    topic is followed at once by a broadcast from another node: every one arrives."""

    async def scenario() -> None:
        async with cluster(make_history_backend, 3) as nodes:
            a, b, c = nodes.nodes
            flood = Recorder("flood")
            await c.join("room:flood", flood)
            stop = asyncio.Event()

            async def load() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    a.broadcast("room:flood", "noise", {"n": n, "pad": "x" * 200})
                    if n % 20 == 0:
                        await asyncio.sleep(0)

            loader = asyncio.create_task(load())

            async def join_then_hear(i: int) -> Recorder:
                topic = f"room:fresh:{i}" if i % 2 else f"h:fresh:{i}"
                recorder = Recorder(topic)
                await b.join(topic, recorder)
                (a if i % 3 else c).broadcast(topic, "hello", {"i": i})
                return recorder

            recorders = await asyncio.gather(*(join_then_hear(i) for i in range(200)))
            for recorder in recorders:
                await recorder.wait_for(1)
            stop.set()
            await loader
            await nodes.barrier()

    asyncio.run(scenario())


def test_a_join_on_a_topic_with_local_subscribers_does_not_wait_for_the_backend(
    make_history_backend: MakeHistoryBackend,
) -> None:
    async def scenario() -> None:
        async with cluster(make_history_backend, 1) as nodes:
            (a,) = nodes.nodes
            await a.join("room:busy", Recorder("first"))
            await join(a, "h:busy", Member("first"))
            calls: list[str] = []
            subscribe = a.backend.subscribe

            def spy(topic: str) -> object:
                calls.append(topic)
                return subscribe(topic)

            a.backend.subscribe = spy  # type: ignore[assignment,method-assign]
            for topic in ("room:busy", "h:busy"):
                # Completes without yielding to the loop: no round trip to the backend.
                coroutine = a.join(topic, Recorder("second"))
                with pytest.raises(StopIteration):
                    coroutine.send(None)
            assert calls == []

    asyncio.run(scenario())


def test_a_history_broadcast_that_cannot_be_kept_is_refused_not_dropped_silently(
    make_history_backend: MakeHistoryBackend,
) -> None:
    async def scenario() -> None:
        async with cluster(make_history_backend, 1) as nodes:
            (a,) = nodes.nodes
            a.backend.publish_history = lambda *args: False  # type: ignore[method-assign]
            with pytest.raises(Unavailable):
                shout(a, "h:room", 1)
            a.broadcast("room:plain", "shout", {"n": 1})  # topics without history: as before

    asyncio.run(scenario())
