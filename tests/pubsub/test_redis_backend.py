"""The Redis backend's own parts: the envelope, backoff, the bounded queue, bad input."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from switchboard.server import eager
from switchboard.server.pubsub import HistoryLimits, PubSub, redis_history
from switchboard.server.pubsub.redis import (
    MalformedEnvelope,
    RedisBackend,
    backoff_delays,
    decode_envelope,
    encode_envelope,
)
from tests.pubsub.helpers import Cluster, Log, Member, Recorder, join
from tests.support.redis import RedisProcess


@pytest.mark.parametrize(
    ("event", "frame"),
    [
        ("new_msg", '[null,null,"room:1","new_msg",{"a":1}]'),
        ("with\x00nul", "text with \x00 and é ☃ 🎉"),
        ("", ""),
        ("bin", bytes(range(256))),
        ("bin", b""),
        ("é" * 1000, b"\xff" * 70_000),
    ],
)
def test_an_envelope_decodes_to_what_was_encoded(event: str, frame: str | bytes) -> None:
    node, got_event, got_frame = decode_envelope(encode_envelope(b"node-1", event, frame))
    assert (node, got_event, got_frame) == (b"node-1", event, frame)
    assert type(got_frame) is type(frame)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"t\x01",
        b"x\x01\x00\x00\x00\x00n",  # unknown kind
        b"t\x01\x00\x00\x00\x09nevent",  # event longer than the data
        b"t\x01\x00\x00\x00\x00n\xff\xfe",  # text frame that is not UTF-8
    ],
)
def test_a_foreign_message_is_rejected_as_malformed(data: bytes) -> None:
    with pytest.raises(MalformedEnvelope):
        decode_envelope(data)


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap_with_jitter() -> None:
    delays = list(itertools.islice(backoff_delays(0.1, 5.0), 12))
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_a_full_queue_drops_and_counts_instead_of_blocking(redis_server: RedisProcess) -> None:
    async def scenario() -> None:
        prefix = f"sb:queue:{uuid.uuid4().hex[:8]}:"

        def make() -> RedisBackend:
            return RedisBackend(redis_server.url, prefix=prefix, queue_size=10)

        async with Cluster(make, 2) as nodes:
            a, b = nodes.nodes
            there = Recorder("b")
            b.subscribe("room:1", there)
            await nodes.settle()
            backend = a.backend
            assert isinstance(backend, RedisBackend)

            for n in range(100):  # no await in between: the publisher cannot drain meanwhile
                a.broadcast_frame("room:1", "n", str(n))
            assert (backend.queued, backend.dropped) == (10, 90)
            await there.wait_for(10)
            await nodes.barrier()
            assert there.frames == [str(n) for n in range(10)]
            assert backend.published == 10 + 1  # and the barrier's fence

    asyncio.run(scenario())


def test_a_burst_goes_out_in_batches_and_arrives_in_order(redis_server: RedisProcess) -> None:
    async def scenario() -> None:
        prefix = f"sb:burst:{uuid.uuid4().hex[:8]}:"
        async with Cluster(lambda: RedisBackend(redis_server.url, prefix=prefix), 2) as nodes:
            a, b = nodes.nodes
            backend = a.backend
            assert isinstance(backend, RedisBackend)
            there = Recorder("b")
            b.subscribe("room:1", there)
            await nodes.settle()
            batches: Log[int] = Log("batches")
            send = backend._send

            async def counting_send(batch: list[tuple[str, str, str | bytes]]) -> None:
                batches.append(len(batch))
                await send(batch)

            backend._send = counting_send  # type: ignore[method-assign]

            for n in range(5_000):
                a.broadcast_frame("room:1", "n", str(n))
            await there.wait_for(5_000)
            assert there.frames == [str(n) for n in range(5_000)]
            assert sum(batches.items) == 5_000
            assert len(batches.items) <= 5_000 // backend.batch_size + 1, batches.items

    asyncio.run(scenario())


def test_a_malformed_message_is_counted_and_the_listener_goes_on(
    redis_server: RedisProcess,
) -> None:
    async def scenario() -> None:
        prefix = f"sb:junk:{uuid.uuid4().hex[:8]}:"
        async with Cluster(lambda: RedisBackend(redis_server.url, prefix=prefix), 2) as nodes:
            a, b = nodes.nodes
            backend = b.backend
            assert isinstance(backend, RedisBackend)
            there = Recorder("b")
            b.subscribe("room:1", there)
            await nodes.settle()

            async with Redis.from_url(redis_server.url) as other_program:
                await other_program.publish(f"{prefix}room:1", b"not an envelope")
            a.broadcast_frame("room:1", "msg", '"fine"')
            await there.wait_for(1)

            assert there.frames == ['"fine"']
            assert backend.malformed == 1
            assert backend.status.connected

    asyncio.run(scenario())


def test_a_node_id_must_fit_the_envelope(redis_server: RedisProcess) -> None:
    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="node id"):
            await PubSub(RedisBackend(redis_server.url), "n" * 256).start()

    asyncio.run(scenario())


def test_settled_waits_for_redis_to_confirm_subscriptions(redis_server: RedisProcess) -> None:
    async def scenario() -> None:
        backend = RedisBackend(redis_server.url, prefix=f"sb:settle:{uuid.uuid4().hex[:8]}:")
        await backend.start("n", lambda *args: None)
        backend.subscribe("room:1")
        backend.subscribe("room:2")
        backend.unsubscribe("room:2")
        await asyncio.wait_for(backend.settled(), 5)
        async with Redis.from_url(redis_server.url) as admin:
            channels = await admin.pubsub_channels(f"{backend.prefix}*")
        assert channels == [f"{backend.prefix}room:1".encode()]
        await backend.stop()

    asyncio.run(scenario())


def test_a_join_returns_only_once_redis_delivers_the_topic_to_this_node(
    redis_server: RedisProcess,
) -> None:
    """Right after each first join of a topic returns, another process PUBLISHes on it
    (a blocking client, so this node's loop cannot slip a SUBSCRIBE in between): every
    broadcast arrives."""

    async def scenario() -> None:
        prefix = f"sb:join:{uuid.uuid4().hex[:8]}:"
        async with Cluster(lambda: RedisBackend(redis_server.url, prefix=prefix), 1) as nodes:
            (node,) = nodes.nodes
            other_process = SyncRedis.from_url(redis_server.url)
            recorders = []
            try:
                for i in range(50):
                    topic = f"room:joined:{i}"
                    recorder = Recorder(topic)
                    await node.join(topic, recorder)
                    frame = f'[null,null,"{topic}","hello",{{}}]'
                    envelope = encode_envelope(b"another-node", "hello", frame)
                    assert other_process.publish(f"{prefix}{topic}", envelope) == 1
                    recorders.append(recorder)
            finally:
                other_process.close()
            for recorder in recorders:
                await recorder.wait_for(1)

    asyncio.run(scenario())


def test_a_topics_stream_holds_its_latest_size_broadcasts_and_expires_when_quiet(
    redis_server: RedisProcess,
) -> None:
    async def scenario() -> None:
        prefix = f"sb:stream:{uuid.uuid4().hex[:8]}:"
        limits = HistoryLimits(size=3, ttl=60)

        def make() -> RedisBackend:
            return RedisBackend(redis_server.url, prefix=prefix, history=limits)

        async with Cluster(make, 1) as nodes:
            (node,) = nodes.nodes
            member = Member()
            await join(node, "h:room", member)
            for n in range(10):
                node.broadcast("h:room", "shout", {"n": n})
            await member.wait_for(10)
            async with Redis.from_url(redis_server.url) as admin:
                keys = redis_history.Keys(prefix)
                assert await admin.xlen(keys.log("h:room")) == 3
                assert 0 < await admin.ttl(keys.log("h:room")) <= 60
                assert 60 < await admin.ttl(keys.meta("h:room")) <= redis_history.META_TTL

    asyncio.run(scenario())


def test_a_history_write_retried_after_a_lost_reply_is_not_written_twice(
    redis_server: RedisProcess,
) -> None:
    async def scenario() -> None:
        prefix = f"sb:retry:{uuid.uuid4().hex[:8]}:"
        async with Cluster(lambda: RedisBackend(redis_server.url, prefix=prefix), 1) as nodes:
            (node,) = nodes.nodes
            backend = node.backend
            assert isinstance(backend, RedisBackend)
            member = Member()
            await join(node, "h:room", member)
            batch = [("h:room", "shout", '[null,null,"h:room","shout",{}]', 1, 0)]
            await backend._send(batch)
            await backend._send(batch)  # as if the first reply had been lost
            await member.wait_for(1)
            await nodes.barrier()
            assert len(member.items) == 1
            assert (await node.join("h:room", Member())).position.offset == 1  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_a_recovering_join_runs_inline_outside_any_task_as_a_socket_reads_it(
    redis_server: RedisProcess,
) -> None:
    """Frames are handled in a transport callback, not a task, and a join runs inline
    (server/eager.py) until it waits: reading the history must not need a current task."""

    async def scenario() -> None:
        prefix = f"sb:inline:{uuid.uuid4().hex[:8]}:"
        async with Cluster(lambda: RedisBackend(redis_server.url, prefix=prefix), 1) as nodes:
            (node,) = nodes.nodes
            first = Member()
            await join(node, "h:room", first)
            for n in range(3):
                node.broadcast("h:room", "shout", {"n": n})
            await first.wait_for(3)
            loop = asyncio.get_running_loop()
            outcome: asyncio.Future[Any] = loop.create_future()

            def from_a_callback() -> None:
                assert asyncio.current_task() is None
                rest = eager.start(join(node, "h:room", Member(), str(first.positions[0])))
                assert rest is not None  # it waits for Redis
                task = loop.create_task(_await(rest))
                task.add_done_callback(lambda t: outcome.set_result(t.result()))

            loop.call_soon(from_a_callback)
            joined = await asyncio.wait_for(outcome, 5)
            assert joined.recovered and len(joined.replay) == 2

    asyncio.run(scenario())


async def _await(rest: eager.Resumed) -> Any:
    return await rest
