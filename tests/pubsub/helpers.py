"""A cluster of pub/sub nodes in one event loop, and subscribers a test can wait on."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

from switchboard.server.codec import Frame
from switchboard.server.pubsub import Backend, Joined, Position, PubSub

WAIT = 5.0  # seconds; every wait is on an event, this only bounds a failure
FENCE_TOPIC = "test:fence"
T = TypeVar("T")


class Log(Generic[T]):
    """Items in arrival order, and a way to wait (on an event, not a sleep) for a condition."""

    def __init__(self, name: str = "log") -> None:
        self.name = name
        self.items: list[T] = []
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    def append(self, item: T) -> None:
        self.items.append(item)
        self.changed()

    def changed(self) -> None:
        """Wake the waiters whose condition now holds (call it after any change they read)."""
        for condition, future in self._waiters:
            if not future.done() and condition():
                future.set_result(None)

    async def wait_until(self, condition: Callable[[], bool], timeout: float = WAIT) -> None:
        if condition():
            return
        future = asyncio.get_running_loop().create_future()
        waiter = (condition, future)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AssertionError(f"{self.name} waited {timeout}s in vain: {self.items!r}") from None
        finally:
            self._waiters.remove(waiter)

    async def wait_for(self, count: int, timeout: float = WAIT) -> None:
        await self.wait_until(lambda: len(self.items) >= count, timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class Recorder(Log[tuple[str, Frame]]):
    """A local subscriber that records the (event, frame) pairs it is given."""

    def deliver(self, event: str, frame: Frame) -> None:
        self.append((event, frame))

    @property
    def received(self) -> list[tuple[str, Frame]]:
        return self.items

    @property
    def frames(self) -> list[Frame]:
        return [frame for _, frame in self.items]


HISTORY_PREFIX = "h:"


def history_topics(topic: str) -> bool:
    """In these tests, topics starting with ``h:`` keep history."""
    return topic.startswith(HISTORY_PREFIX)


class Member(Log[tuple[str, Frame]]):
    """A subscriber that joins as a channel does: after :func:`join` its items are what the
    channel's client would get, the replay first, then every delivery."""

    def __init__(self, name: str = "member") -> None:
        super().__init__(name)
        self.joined: Joined | None = None
        self.lost = 0

    def deliver(self, event: str, frame: Frame) -> None:
        self.append((event, frame))

    def history_lost(self) -> None:
        self.lost += 1
        self.changed()

    @property
    def positions(self) -> list[Position]:
        """The positions (refs) of the frames received, in order."""
        found = []
        for _, frame in self.items:
            assert isinstance(frame, str), frame
            position = Position.parse(json.loads(frame)[1])
            assert position is not None, frame
            found.append(position)
        return found

    @property
    def payloads(self) -> list[object]:
        return [json.loads(frame)[4] for _, frame in self.items]  # type: ignore[arg-type]


async def join(node: PubSub, topic: str, member: Member, since: object = None) -> Joined:
    joined = await node.join(topic, member, since)
    assert joined is not None, f"{topic} is not a history topic"
    member.joined = joined
    member.items[:0] = joined.replay  # what arrived while the join read the history follows
    return joined


class Cluster:
    """``size`` nodes, each a :class:`PubSub` with a backend of its own, in this loop.

    Topics starting with ``h:`` keep history. On exit the nodes are stopped and no asyncio
    task may be left over.
    """

    def __init__(self, make_backend: Callable[[], Backend], size: int) -> None:
        run = uuid.uuid4().hex[:6]
        self.nodes = [
            PubSub(make_backend(), f"node{i}-{run}", history=history_topics) for i in range(size)
        ]
        self._fences = [Recorder(f"fence@{node.node}") for node in self.nodes]
        self._rounds = itertools.count(1)

    def __getitem__(self, index: int) -> PubSub:
        return self.nodes[index]

    async def __aenter__(self) -> Cluster:
        for node, fence in zip(self.nodes, self._fences, strict=True):
            await node.start()
            node.subscribe(FENCE_TOPIC, fence)
        await self.settle()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for node in self.nodes:
            await node.stop()
        if exc is None:
            assert_no_tasks_left()

    async def settle(self) -> None:
        """Wait until every backend has applied the subscribes and unsubscribes made so far."""
        for node in self.nodes:
            settled = getattr(node.backend, "settled", None)
            if settled is not None:
                await asyncio.wait_for(settled(), WAIT)

    async def barrier(self) -> None:
        """Return once every message a node published before now has reached every node.

        Each node publishes a fence, and each waits for everyone's. A node publishes its
        fence after it received what the test waited for, so the broker had handled those
        messages (and any echo or duplicate of them) before the fence, and delivers them to
        each node first.
        """
        round_ = next(self._rounds)
        for i, node in enumerate(self.nodes):
            node.broadcast_frame(FENCE_TOPIC, "fence", f"{round_}:{i}")
        expected = {f"{round_}:{i}" for i in range(len(self.nodes))}
        for fence in self._fences:
            await fence.wait_until(lambda fence=fence: expected <= set(fence.frames))


def assert_no_tasks_left() -> None:
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, f"tasks left running: {others}"
