"""Emitters publish from outside the cluster (a web backend, a worker) through a real Redis
and reach clients on every node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from switchboard import AsyncEmitter, Emitter
from switchboard.client import WAIT, Client
from switchboard.server.pubsub import Position
from tests.support.clients import open_client
from tests.support.processes import ServerProcess, running_server
from tests.support.redis import RedisProcess, running_redis


@dataclass
class Cluster:
    redis: RedisProcess
    nodes: tuple[ServerProcess, ServerProcess]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_redis() as redis, ExitStack() as stack:
        env = {
            "SWITCHBOARD_PUBSUB_URL": redis.url,
            "SWITCHBOARD_LIMITS": "off",
            "SWITCHBOARD_PRESENCE": "off",
        }
        first = stack.enter_context(running_server({**env, "SWITCHBOARD_NODE": "emit-1"}))
        second = stack.enter_context(
            running_server(
                {**env, "SWITCHBOARD_NODE": "emit-2", "SWITCHBOARD_SECRET": first.secret}
            )
        )
        yield Cluster(redis, (first, second))


def _subscribed_on_both(emitter: Emitter, topic: str) -> None:
    """Both nodes have subscribed ``topic`` in Redis: a probe reaches two subscribers."""
    deadline = time.monotonic() + WAIT
    while emitter.broadcast(topic, "probe", {}) < 2:
        assert time.monotonic() < deadline, f"{topic} not subscribed on both nodes in time"
        time.sleep(0.02)


def _news(wire: Client, topic: str) -> list[dict[str, object]]:
    frame = wire.event(topic, "news")
    return [frame[4]]


def test_an_emitter_broadcast_reaches_clients_on_every_node(cluster: Cluster) -> None:
    topic = "room:emitted"
    with ExitStack() as stack, Emitter(cluster.redis.url) as emitter:
        wires = [open_client(stack, node, f"reader-{n}") for n, node in enumerate(cluster.nodes)]
        for wire in wires:
            wire.joined(topic)
        _subscribed_on_both(emitter, topic)

        assert emitter.broadcast(topic, "news", {"text": "from the backend"}) == 2
        refs = []
        for wire in wires:
            assert _news(wire, topic) == [{"text": "from the backend"}]
            frame = next(f for f in wire.frames if isinstance(f, list) and f[3] == "news")
            # A broadcast as a node's own would be: room:* keeps history, so it has a position.
            assert frame[0] is None and Position.parse(frame[1]) is not None
            refs.append(frame[1])
        assert refs[0] == refs[1], "the same position on every node"


def test_an_emitter_broadcast_on_a_history_topic_is_recovered_by_a_client_that_missed_it(
    cluster: Cluster,
) -> None:
    topic = "room:emitted-missed"
    with ExitStack() as stack, Emitter(cluster.redis.url) as emitter:
        first = open_client(stack, cluster.nodes[0], "first")
        position = first.call(topic, "phx_join")[4]["response"]["position"]
        assert emitter.broadcast(topic, "news", {"n": 1}) == 1
        emitter.broadcast(topic, "blob", b"\x01")  # binary: live only, not kept
        assert _news(first, topic) == [{"n": 1}]
        late = open_client(stack, cluster.nodes[1], "late")
        reply = late.call(topic, "phx_join", {"since": position})
        assert reply[4]["response"]["recovered"] is True
        assert _news(late, topic) == [{"n": 1}]


def test_the_async_emitter_reaches_clients_on_every_node(cluster: Cluster) -> None:
    topic = "room:emitted-async"
    with ExitStack() as stack, Emitter(cluster.redis.url) as probe:
        wires = [open_client(stack, node, f"async-{n}") for n, node in enumerate(cluster.nodes)]
        for wire in wires:
            wire.joined(topic)
        _subscribed_on_both(probe, topic)

        async def emit() -> int:
            async with AsyncEmitter(cluster.redis.url) as emitter:
                return await emitter.broadcast(topic, "news", {"text": "async"})

        assert asyncio.run(emit()) == 2
        for wire in wires:
            assert _news(wire, topic) == [{"text": "async"}]


def test_disconnect_closes_that_socket_id_on_every_node_and_no_other(cluster: Cluster) -> None:
    with ExitStack() as stack, Emitter(cluster.redis.url) as emitter:
        doomed = [open_client(stack, node, "mallory") for node in cluster.nodes]
        bystanders = [
            open_client(stack, node, f"bystander-{n}") for n, node in enumerate(cluster.nodes)
        ]
        for wire in doomed + bystanders:
            wire.joined("room:kick")
        # Each node subscribes the socket id's topic when its first socket with that id opens.
        _subscribed_on_both(emitter, "users_socket:mallory")

        assert emitter.disconnect("users_socket:mallory") == 2
        assert [wire.closed() for wire in doomed] == [1001, 1001]
        for wire in bystanders:
            assert wire.reply(wire.heartbeat())[4]["status"] == "ok"


@pytest.mark.parametrize(
    ("topic", "event", "payload", "problem"),
    [
        ("switchboard:presence", "delta", {}, "internal"),
        ("room:x", "phx_reply", {}, "reserved"),
        ("room:x", "presence_diff", {}, "reserved"),
        ("", "news", {}, "topic must be"),
        ("room:x", "news", ["not", "an", "object"], "payload must be"),
    ],
)
def test_an_emitter_refuses_what_no_node_would_send(
    cluster: Cluster, topic: str, event: str, payload: object, problem: str
) -> None:
    with Emitter(cluster.redis.url) as emitter, pytest.raises(ValueError, match=problem):
        emitter.broadcast(topic, event, payload)  # type: ignore[arg-type]
