"""The Redis backend through outages of a real, private redis-server (killed by PID)."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from switchboard.server.pubsub import BackendStatus, PubSub, Unavailable
from switchboard.server.pubsub.redis import RedisBackend
from tests.pubsub.helpers import Cluster, Log, Member, Recorder, assert_no_tasks_left, join
from tests.support.redis import RedisProcess, running_redis


@pytest.fixture
def redis(redis_server: RedisProcess) -> Iterator[RedisProcess]:
    """The module's server, running again after each test whatever the test did to it."""
    yield redis_server
    if not redis_server.running:
        redis_server.restart()


class Watch:
    """What a node's backend reported: status changes and reconnections."""

    def __init__(self, node: PubSub) -> None:
        backend = node.backend
        assert isinstance(backend, RedisBackend)
        self.backend = backend
        self.statuses: Log[BackendStatus] = Log(f"statuses of {node.node}")
        self.reconnects: Log[None] = Log(f"reconnects of {node.node}")
        backend.add_status_listener(self.statuses.append)
        backend.add_reconnect_listener(lambda: self.reconnects.append(None))

    async def down(self) -> BackendStatus:
        await self.statuses.wait_until(lambda: not self.backend.status.connected)
        return self.backend.status

    async def up(self) -> None:
        await self.statuses.wait_until(lambda: self.backend.status.connected)


def cluster(redis: RedisProcess, size: int, **options: float) -> Cluster:
    prefix = f"sb:outage:{uuid.uuid4().hex[:8]}:"
    options = {"backoff_initial": 0.05, "backoff_max": 0.4, **options}
    return Cluster(lambda: RedisBackend(redis.url, prefix=prefix, **options), size)  # type: ignore[arg-type]


def test_nodes_survive_a_redis_crash_and_resubscribe_when_it_returns(
    redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchboard.pubsub")

    async def scenario() -> None:
        async with cluster(redis, 2) as nodes:
            a, b = nodes.nodes
            watches = [Watch(a), Watch(b)]
            here, there = Recorder("a"), Recorder("b")
            a.subscribe("room:1", here)
            b.subscribe("room:1", there)
            await nodes.settle()
            a.broadcast_frame("room:1", "msg", '"before"')
            await there.wait_for(1)

            redis.kill()
            for watch in watches:
                status = await watch.down()
                assert status.reason, status
            assert watches[0].reconnects.items == []

            dropped = watches[0].backend.dropped
            a.broadcast_frame("room:1", "msg", '"during"')  # returns at once, raises nothing
            assert here.frames == ['"before"', '"during"']  # local fan-out goes on
            assert watches[0].backend.dropped == dropped + 1

            await asyncio.to_thread(redis.restart)
            for watch in watches:
                await watch.up()
                await watch.reconnects.wait_for(1)
            await nodes.settle()
            a.broadcast_frame("room:1", "msg", '"after from a"')
            b.broadcast_frame("room:1", "msg", '"after from b"')
            await there.wait_for(3)
            await here.wait_for(4)
            await nodes.barrier()

            after = ['"after from a"', '"after from b"']
            assert there.frames[0] == '"before"' and sorted(there.frames[1:]) == after
            assert here.frames[:2] == ['"before"', '"during"'] and sorted(here.frames[2:]) == after
            for watch in watches:
                assert [s.connected for s in watch.statuses.items] == [False, True]
                assert watch.reconnects.items == [None]
                assert watch.backend.reconnects == 1

    asyncio.run(scenario())
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert sum(m.startswith("pub/sub backend lost: ") for _, m in messages) == 2, messages
    assert messages.count(("INFO", "pub/sub backend reconnected")) == 2, messages


def test_a_backend_started_while_redis_is_down_connects_once_it_is_up(
    redis: RedisProcess,
) -> None:
    redis.kill()

    async def scenario() -> None:
        backend = RedisBackend(redis.url, backoff_initial=0.05, backoff_max=0.4)
        node = PubSub(backend, "late-node")
        watch = Watch(node)
        await node.start()  # returns after the first failed attempt
        assert not backend.status.connected
        assert "connect" in backend.status.reason.lower(), backend.status
        node.broadcast_frame("room:1", "msg", '"nobody hears this"')
        assert backend.dropped == 1

        await asyncio.to_thread(redis.restart)
        await watch.up()
        await watch.reconnects.wait_for(1)
        await node.stop()
        assert_no_tasks_left()

    asyncio.run(scenario())


def test_stop_during_an_outage_leaves_no_task_or_thread_behind(redis: RedisProcess) -> None:
    threads = threading.enumerate()

    async def scenario() -> None:
        node = PubSub(RedisBackend(redis.url, backoff_initial=0.05, backoff_max=0.4), "n")
        watch = Watch(node)
        await node.start()
        node.subscribe("room:1", Recorder())
        redis.kill()
        await watch.down()
        await node.stop()
        assert_no_tasks_left()
        assert threading.enumerate() == threads
        assert node.status == BackendStatus(False, "stopped")

    asyncio.run(scenario())


def test_a_subscriber_connection_closed_by_redis_is_replaced(redis: RedisProcess) -> None:
    async def scenario() -> None:
        async with cluster(redis, 2) as nodes:
            a, b = nodes.nodes
            watch = Watch(b)
            there = Recorder("b")
            b.subscribe("room:1", there)
            await nodes.settle()

            async with Redis.from_url(redis.url) as admin:
                assert await admin.client_kill_filter(_type="pubsub") >= 2
            status = await watch.down()
            assert "closed" in status.reason.lower() or "connect" in status.reason.lower()
            await watch.up()
            await watch.reconnects.wait_for(1)

            await nodes.settle()
            a.broadcast_frame("room:1", "msg", '"still here"')
            await there.wait_for(1)
            assert there.frames == ['"still here"']

    asyncio.run(scenario())


def test_a_redis_that_stops_answering_is_detected_by_ping(redis: RedisProcess) -> None:
    async def scenario() -> None:
        async with cluster(redis, 1, ping_interval=0.1) as nodes:
            watch = Watch(nodes[0])
            async with Redis.from_url(redis.url) as admin:
                await admin.execute_command("CLIENT", "PAUSE", 1000, "ALL")
            status = await watch.down()
            assert "did not answer a PING" in status.reason
            await watch.up()  # once the pause is over
            await watch.reconnects.wait_for(1)

    asyncio.run(scenario())


# -- history topics through outages -------------------------------------------------------------


@pytest.fixture(scope="module")
def persistent_redis() -> Iterator[RedisProcess]:
    """A redis-server that keeps its data across a restart (append-only file)."""
    with running_redis(persistent=True) as redis:
        yield redis


def shout(node: PubSub, topic: str, n: int) -> None:
    node.broadcast(topic, "shout", {"n": n})


def test_history_broadcasts_made_while_redis_is_down_are_written_once_it_is_back(
    persistent_redis: RedisProcess,
) -> None:
    """Buffer-and-write-later: shouts on a history topic while Redis is stopped are
    accepted, kept in order, written when it is back, and reach every node once, in one
    order; a shout on a plain topic is dropped for the other nodes, as before."""

    async def scenario() -> None:
        async with cluster(persistent_redis, 2) as nodes:
            a, b = nodes.nodes
            watches = [Watch(a), Watch(b)]
            here, there = Member("a"), Member("b")
            await join(a, "h:room", here)
            await join(b, "h:room", there)
            plain = Recorder("plain")
            await b.join("room:plain", plain)
            shout(a, "h:room", 0)
            await there.wait_for(1)

            await asyncio.to_thread(persistent_redis.stop)  # SIGTERM by PID
            for watch in watches:
                await watch.down()
            for n in range(1, 6):
                shout(a, "h:room", n)  # raises nothing: buffered
                shout(b, "h:room", 100 + n)
            shout(a, "room:plain", 1)  # a plain topic: dropped for the other nodes
            assert (len(here.items), len(there.items)) == (1, 1)  # nothing is delivered yet

            await asyncio.to_thread(persistent_redis.restart)
            for watch in watches:
                await watch.up()
            await here.wait_for(11)
            await there.wait_for(11)
            shout(b, "h:room", 106)
            await here.wait_for(12)
            await there.wait_for(12)
            await nodes.barrier()

            assert here.items == there.items
            assert [p.offset for p in here.positions] == list(range(1, 13))
            payloads = [p["n"] for p in here.payloads]  # type: ignore[index]
            assert [n for n in payloads if n < 100] == [0, 1, 2, 3, 4, 5]
            assert [n for n in payloads if n >= 100] == [101, 102, 103, 104, 105, 106]
            assert here.lost == there.lost == 0
            assert plain.items == []
            # A client that had seen the first shout recovers the ones from the outage.
            late = Member("late")
            joined = await join(a, "h:room", late, str(here.positions[0]))
            assert joined.recovered and late.items == here.items[1:]

    asyncio.run(scenario())


def test_when_the_buffer_is_full_a_history_broadcast_is_refused(redis: RedisProcess) -> None:
    async def scenario() -> None:
        async with cluster(redis, 1, queue_size=5) as nodes:
            (a,) = nodes.nodes
            watch = Watch(a)
            await join(a, "h:room", Member())
            redis.kill()
            await watch.down()
            for n in range(5):
                shout(a, "h:room", n)
            with pytest.raises(Unavailable):
                shout(a, "h:room", 5)
            a.broadcast("room:plain", "shout", {"n": 1})  # plain topics still never raise

    asyncio.run(scenario())


def test_a_node_cut_off_for_a_moment_gets_what_was_published_meanwhile_once_in_order(
    redis: RedisProcess,
) -> None:
    async def scenario() -> None:
        async with cluster(redis, 2) as nodes:
            a, b = nodes.nodes
            watch = Watch(b)
            source, member = Member("source"), Member("b")
            await join(a, "h:room", source)
            await join(b, "h:room", member)
            published = 0

            async def publish(count: int) -> None:
                nonlocal published
                for _ in range(count):
                    published += 1
                    shout(a, "h:room", published)
                    await asyncio.sleep(0.002)

            await publish(20)
            async with Redis.from_url(redis.url) as admin:  # b's subscriber connection only
                clients = await admin.client_list(_type="pubsub")
                (listener,) = [c for c in clients if c["name"] == f"switchboard-{b.node}"]
                assert await admin.client_kill_filter(_id=listener["id"]) == 1
            await watch.down()
            await publish(20)  # b is not subscribed now: it misses these
            await watch.up()
            await publish(20)
            await member.wait_for(published)
            await source.wait_for(published)
            await nodes.barrier()
            assert member.items == source.items
            assert [p.offset for p in member.positions] == list(range(1, published + 1))
            assert member.lost == 0

    asyncio.run(scenario())


def test_a_redis_restart_that_lost_the_history_tells_every_subscriber_and_recovers_nothing(
    redis: RedisProcess,
) -> None:
    async def scenario() -> None:
        async with cluster(redis, 2) as nodes:
            a, b = nodes.nodes
            watches = [Watch(a), Watch(b)]
            here, there = Member("a"), Member("b")
            await join(a, "h:room", here)
            await join(b, "h:room", there)
            shout(a, "h:room", 1)
            await there.wait_for(1)
            before = there.positions[-1]

            redis.kill()
            for watch in watches:
                await watch.down()
            await asyncio.to_thread(redis.restart)  # empty: no persistence
            for watch in watches:
                await watch.up()
            shout(a, "h:room", 2)
            await there.wait_until(lambda: there.lost == 1)
            await here.wait_until(lambda: here.lost == 1)
            back = await join(b, "h:room", Member(), str(before))
            assert not back.recovered and back.replay == []
            assert back.position.epoch != before.epoch

    asyncio.run(scenario())


def test_a_join_during_an_outage_is_answered_at_once_and_the_log_says_so(
    redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="switchboard.pubsub")

    async def scenario() -> None:
        async with cluster(redis, 1) as nodes:
            (a,) = nodes.nodes
            watch = Watch(a)
            redis.kill()
            await watch.down()
            for i in range(3):
                joining = a.join(f"room:during:{i}", Recorder())
                with pytest.raises(StopIteration):  # done without waiting for anything
                    joining.send(None)

    asyncio.run(scenario())
    unconfirmed = [
        r for r in caplog.records if "before the subscription is confirmed" in r.getMessage()
    ]
    assert len(unconfirmed) == 1, "logged once per outage, not once per join"
    assert "room:during:0" in unconfirmed[0].getMessage()
