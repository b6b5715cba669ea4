"""The contract every pub/sub backend meets, run against each of them.

Nodes are :class:`PubSub` instances with a backend each, in one event loop: memory nodes
share a named hub, Redis nodes a private redis-server. Tests wait on events, never sleep.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from switchboard.server.codec import Frame
from tests.pubsub.conftest import MakeBackend
from tests.pubsub.helpers import Cluster, Recorder, assert_no_tasks_left


def test_a_backend_is_connected_after_start(make_backend: MakeBackend) -> None:
    async def scenario() -> None:
        async with Cluster(make_backend, 2) as cluster:
            for node in cluster.nodes:
                assert node.status.connected, node.status
                assert node.status.reason == ""

    asyncio.run(scenario())


def test_a_broadcast_reaches_every_subscriber_on_every_node_exactly_once(
    make_backend: MakeBackend,
) -> None:
    async def scenario() -> None:
        async with Cluster(make_backend, 3) as cluster:
            recorders = []
            for node in cluster.nodes:
                for j in range(2):
                    recorder = Recorder(f"{node.node}/{j}")
                    node.subscribe("room:lobby", recorder)
                    recorders.append(recorder)
            await cluster.settle()

            for i, node in enumerate(cluster.nodes):
                node.broadcast_frame("room:lobby", "shout", f'{{"from":{i}}}')
            for recorder in recorders:
                await recorder.wait_for(3)
            await cluster.barrier()

            for recorder in recorders:
                assert sorted(recorder.received) == [
                    ("shout", f'{{"from":{i}}}') for i in range(3)
                ], recorder

    asyncio.run(scenario())


def test_exclude_skips_one_local_subscriber_and_no_one_on_other_nodes(
    make_backend: MakeBackend,
) -> None:
    async def scenario() -> None:
        async with Cluster(make_backend, 2) as cluster:
            a, b = cluster.nodes
            sender, neighbour, remote = Recorder("sender"), Recorder("neighbour"), Recorder("b")
            a.subscribe("room:1", sender)
            a.subscribe("room:1", neighbour)
            b.subscribe("room:1", remote)
            await cluster.settle()

            a.broadcast_frame("room:1", "typing", '{"user":"ann"}', exclude=sender)
            await neighbour.wait_for(1)
            await remote.wait_for(1)
            await cluster.barrier()

            assert sender.received == []
            assert neighbour.received == remote.received == [("typing", '{"user":"ann"}')]

    asyncio.run(scenario())


def test_a_node_receives_a_topic_from_its_first_local_subscriber_until_its_last_leaves(
    make_backend: MakeBackend,
) -> None:
    async def scenario() -> None:
        async with Cluster(make_backend, 2) as cluster:
            a, b = cluster.nodes
            calls: list[tuple[str, str]] = []
            subscribe, unsubscribe = b.backend.subscribe, b.backend.unsubscribe

            def spy_subscribe(topic: str) -> None:
                calls.append(("subscribe", topic))
                subscribe(topic)

            def spy_unsubscribe(topic: str) -> None:
                calls.append(("unsubscribe", topic))
                unsubscribe(topic)

            b.backend.subscribe = spy_subscribe  # type: ignore[method-assign]
            b.backend.unsubscribe = spy_unsubscribe  # type: ignore[method-assign]
            first, second = Recorder("first"), Recorder("second")
            b.subscribe("room:2", first)
            b.subscribe("room:2", second)
            await cluster.settle()
            assert calls == [("subscribe", "room:2")]

            b.unsubscribe("room:2", first)
            await cluster.settle()
            a.broadcast_frame("room:2", "one", '"1"')
            await second.wait_for(1)
            assert calls == [("subscribe", "room:2")]

            b.unsubscribe("room:2", second)
            assert calls == [("subscribe", "room:2"), ("unsubscribe", "room:2")]
            await cluster.settle()
            deliveries = b.deliveries
            a.broadcast_frame("room:2", "two", '"2"')
            await cluster.barrier()

            assert first.received == []
            assert second.received == [("one", '"1"')]
            assert b.deliveries == deliveries + len(cluster.nodes)  # the barrier's fences only

    asyncio.run(scenario())


def test_a_backend_does_not_hand_a_node_its_own_broadcasts(make_backend: MakeBackend) -> None:
    async def scenario() -> None:
        async with Cluster(make_backend, 2) as cluster:
            a, b = cluster.nodes
            here, there = Recorder("here"), Recorder("there")
            a.subscribe("room:3", here)
            b.subscribe("room:3", there)
            await cluster.settle()

            a.broadcast_frame("room:3", "ping", '"once"')
            await there.wait_for(1)
            await cluster.barrier()

            assert here.received == there.received == [("ping", '"once"')]

    asyncio.run(scenario())


TEXT_FRAMES = [
    '[null,null,"room:x","new_msg",{"body":"h\\u00e9llo \\u0000 ☃ 🎉"}]',
    "plain ascii",
    "nul \x00 inside, and é ☃ 🎉 raw",
    "",
]
BINARY_FRAMES = [
    bytes([2, 0, 6, 7]) + b"room:x" + b"new_msg" + bytes(range(256)),
    b"\x00",
    b"\xff\xfe not utf-8 \x80",
    b"",
]
EVENTS = ["new_msg", "presence_diff", "é ☃ 🎉", "with\x00nul", "x" * 300]


@pytest.mark.parametrize("frames", [TEXT_FRAMES, BINARY_FRAMES], ids=["text", "binary"])
def test_frames_and_event_names_arrive_exactly_as_sent(
    make_backend: MakeBackend, frames: list[Frame]
) -> None:
    async def scenario() -> None:
        async with Cluster(make_backend, 2) as cluster:
            a, b = cluster.nodes
            recorder = Recorder("b")
            b.subscribe("room:x", recorder)
            await cluster.settle()

            sent = [(event, frame) for event in EVENTS for frame in frames]
            for event, frame in sent:
                a.broadcast_frame("room:x", event, frame)
            await recorder.wait_for(len(sent))

            assert recorder.received == sent
            for (_, got), (_, want) in zip(recorder.received, sent, strict=True):
                assert type(got) is type(want)

    asyncio.run(scenario())


def test_many_broadcasts_keep_their_order_per_publisher(make_backend: MakeBackend) -> None:
    count = 2_000

    async def scenario() -> None:
        async with Cluster(make_backend, 3) as cluster:
            a, b, c = cluster.nodes
            recorder = Recorder("c")
            c.subscribe("room:firehose", recorder)
            await cluster.settle()

            for n in range(count):
                a.broadcast_frame("room:firehose", "a", str(n))
                b.broadcast_frame("room:firehose", "b", str(n).encode())
            await recorder.wait_for(2 * count)
            await cluster.barrier()

            from_a = [frame for event, frame in recorder.received if event == "a"]
            from_b = [frame for event, frame in recorder.received if event == "b"]
            assert from_a == [str(n) for n in range(count)]
            assert from_b == [str(n).encode() for n in range(count)]

    asyncio.run(scenario())


def test_topics_are_independent(make_backend: MakeBackend) -> None:
    async def scenario() -> None:
        async with Cluster(make_backend, 2) as cluster:
            a, b = cluster.nodes
            red, blue = Recorder("red"), Recorder("blue")
            b.subscribe("room:red", red)
            b.subscribe("room:blue", blue)
            await cluster.settle()

            a.broadcast_frame("room:red", "paint", '"red"')
            a.broadcast_frame("room:green", "paint", '"green"')  # nobody listens anywhere
            await red.wait_for(1)
            await cluster.barrier()

            assert red.received == [("paint", '"red"')]
            assert blue.received == []

    asyncio.run(scenario())


def test_stop_leaves_no_task_or_thread_behind(make_backend: MakeBackend) -> None:
    threads = threading.enumerate()

    async def scenario() -> None:
        backend = make_backend()
        delivered: list[object] = []
        await backend.start("lonely-node", lambda *args: delivered.append(args))
        backend.subscribe("room:1")
        backend.publish("room:1", "e", "{}")
        await backend.stop()
        assert_no_tasks_left()
        assert threading.enumerate() == threads
        assert not backend.status.connected

    asyncio.run(scenario())
