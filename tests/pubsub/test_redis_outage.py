"""The Redis backend through outages of a real, private redis-server (killed by PID)."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from switchboard.server.pubsub import BackendStatus, PubSub
from switchboard.server.pubsub.redis import RedisBackend
from tests.pubsub.helpers import Cluster, Log, Recorder, assert_no_tasks_left
from tests.support.redis import RedisProcess


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
