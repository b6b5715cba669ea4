"""The sequencer of a history topic on one node, fed out of order by a scripted backend.

Real backends deliver in order except around outages; here the test delivers whatever it
likes (duplicates, gaps, another epoch) and decides what the backend's history holds and
when a read answers or fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from switchboard.server.codec import Frame
from switchboard.server.pubsub import PubSub, Unavailable
from switchboard.server.pubsub.base import (
    Backend,
    BackendStatus,
    Deliver,
    DeliverHistory,
    _ignore_history,
)
from switchboard.server.pubsub.history import HistoryRead, Position, complete
from tests.pubsub.helpers import Member, history_topics, join

TOPIC = "h:room"


def frame(n: int) -> str:
    return f'[null,null,"{TOPIC}","n",{{"n":{n}}}]'


class ScriptedBackend(Backend):
    """History in a dict; deliveries only when the test calls :meth:`arrive`."""

    name = "scripted"

    def __init__(self) -> None:
        self.epoch = "e1"
        self.top = 0
        self.kept: dict[int, str] = {}
        self.fail = False
        self.gate: asyncio.Event | None = None  # reads wait on it when set
        self.reads: list[Position | None] = []
        self._deliver_history: DeliverHistory = _ignore_history
        self._reconnect: list[Callable[[], None]] = []

    async def start(
        self, node: str, deliver: Deliver, deliver_history: DeliverHistory = _ignore_history
    ) -> None:
        self._deliver_history = deliver_history

    async def stop(self) -> None:
        return None

    def subscribe(self, topic: str) -> None:
        return None

    def unsubscribe(self, topic: str) -> None:
        return None

    def publish(self, topic: str, event: str, frame: Frame) -> None:
        return None

    def publish_history(self, topic: str, event: str, frame: str, tag: int) -> bool:
        return True

    def add_reconnect_listener(self, listener: Callable[[], None]) -> None:
        self._reconnect.append(listener)

    @property
    def status(self) -> BackendStatus:
        return BackendStatus(True)

    # -- what the test does

    def publish_kept(self, *offsets: int) -> None:
        for offset in offsets:
            self.kept[offset] = frame(offset)
            self.top = max(self.top, offset)

    def arrive(self, offset: int, epoch: str | None = None) -> None:
        self._deliver_history(TOPIC, "n", frame(offset), Position(epoch or self.epoch, offset), 0)

    def reconnected(self) -> None:
        for listener in self._reconnect:
            listener()

    async def history(
        self, topic: str, since: Position | None, upto: int | None = None
    ) -> HistoryRead:
        self.reads.append(since)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise Unavailable("scripted outage")
        top = Position(self.epoch, self.top)
        if since is None or since.epoch != self.epoch:
            return HistoryRead(top)
        end = self.top if upto is None else min(upto, self.top)
        entries = [
            (o, "n", self.kept[o]) for o in range(since.offset + 1, end + 1) if o in self.kept
        ]
        return HistoryRead(top, complete(since.offset, end, entries, 10**9))


async def started(backend: ScriptedBackend) -> PubSub:
    pubsub = PubSub(backend, "node", history=history_topics)
    await pubsub.start()
    return pubsub


async def member_at_one(backend: ScriptedBackend) -> tuple[PubSub, Member]:
    """A node with one member joined, which got offset 1."""
    pubsub = await started(backend)
    member = Member()
    await join(pubsub, TOPIC, member)
    backend.arrive(1)
    return pubsub, member


async def settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def offsets(member: Member) -> list[int]:
    return [p.offset for p in member.positions]


def test_arrivals_in_order_go_out_at_once_and_duplicates_are_dropped() -> None:
    async def scenario() -> None:
        backend = ScriptedBackend()
        pubsub = await started(backend)
        member = Member()
        await join(pubsub, TOPIC, member)
        for offset in (1, 2, 2, 1, 3):
            backend.arrive(offset)
        assert offsets(member) == [1, 2, 3]
        assert backend.reads == [None]  # only the start

    asyncio.run(scenario())


def test_a_gap_is_filled_from_the_history_before_what_came_after_it() -> None:
    async def scenario() -> None:
        backend = ScriptedBackend()
        pubsub, member = await member_at_one(backend)
        backend.publish_kept(1, 2, 3, 4)
        backend.gate = asyncio.Event()
        backend.arrive(4)  # 2 and 3 never came: read them
        backend.arrive(5)  # held while the read is in flight
        await settled()
        assert offsets(member) == [1]
        backend.gate.set()
        await settled()
        assert offsets(member) == [1, 2, 3, 4, 5]
        assert backend.reads[-1] == Position("e1", 1)
        assert member.lost == 0

    asyncio.run(scenario())


def test_a_gap_the_history_no_longer_covers_tells_the_subscribers_and_goes_on() -> None:
    async def scenario() -> None:
        backend = ScriptedBackend()
        pubsub, member = await member_at_one(backend)
        backend.publish_kept(1, 3, 4)  # 2 was trimmed
        backend.arrive(4)
        await settled()
        assert member.lost == 1
        backend.arrive(5)
        assert offsets(member) == [1, 5]

    asyncio.run(scenario())


def test_a_new_epoch_means_the_history_behind_this_node_is_lost() -> None:
    async def scenario() -> None:
        backend = ScriptedBackend()
        pubsub, member = await member_at_one(backend)
        backend.epoch, backend.top, backend.kept = "e2", 0, {}  # Redis restarted empty
        backend.publish_kept(1)
        backend.arrive(1, epoch="e2")
        await settled()
        assert member.lost == 1
        backend.arrive(2, epoch="e2")
        assert member.positions[-1] == Position("e2", 2)
        rejoined = await join(pubsub, TOPIC, Member(), "e1.1")
        assert not rejoined.recovered and rejoined.position == Position("e2", 2)

    asyncio.run(scenario())


def test_after_an_outage_the_node_catches_up_and_holds_arrivals_until_it_can() -> None:
    async def scenario() -> None:
        backend = ScriptedBackend()
        pubsub, member = await member_at_one(backend)
        backend.publish_kept(1, 2, 3)  # published elsewhere while this node was cut off
        backend.fail = True
        backend.reconnected()
        await settled()
        backend.arrive(4)  # held: the catch-up failed, the node cannot vouch for 2 and 3
        await settled()
        assert offsets(member) == [1]
        backend.publish_kept(4)
        backend.fail = False
        backend.reconnected()
        await settled()
        assert offsets(member) == [1, 2, 3, 4]

    asyncio.run(scenario())


def test_a_join_during_a_read_attaches_after_it_and_misses_nothing() -> None:
    async def scenario() -> None:
        backend = ScriptedBackend()
        pubsub = await started(backend)
        first = Member("first")
        await join(pubsub, TOPIC, first)
        backend.arrive(1)
        backend.publish_kept(1, 2, 3)
        backend.gate = asyncio.Event()
        backend.arrive(3)  # a gap: reading 2
        second = Member("second")
        joining = asyncio.create_task(join(pubsub, TOPIC, second, "e1.1"))
        await settled()
        assert not joining.done()
        backend.gate.set()
        joined = await joining
        backend.arrive(4)
        assert joined.recovered and joined.position == Position("e1", 3)
        assert offsets(first) == [1, 2, 3, 4]
        assert offsets(second) == [2, 3, 4]

    asyncio.run(scenario())


def test_a_join_while_the_history_cannot_be_read_is_refused_and_leaves_nothing_subscribed() -> None:
    async def scenario() -> None:
        backend = ScriptedBackend()
        backend.fail = True
        pubsub = await started(backend)
        try:
            await join(pubsub, TOPIC, Member())
        except Unavailable:
            pass
        else:
            raise AssertionError("the join went through without a position")
        assert pubsub.topics() == {}

    asyncio.run(scenario())
