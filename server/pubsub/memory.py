"""In-memory backend: one node, or several nodes inside one process sharing a hub.

``memory://`` gives a node a hub of its own (nothing to carry, publish costs a dict
lookup). ``memory://NAME`` joins the process-wide hub NAME, which is how tests run a
cluster of nodes in one process and check the same contract the Redis backend meets.

History lives in the hub (:class:`~switchboard.server.pubsub.history.MemoryHistory`), so
every node of a hub sees the same positions. A positioned broadcast goes into each
subscribed node's inbox in position order; the publishing node empties its own inbox at
once (its subscribers get the broadcast before ``broadcast`` returns, as without history),
the others on their next loop iteration, as a network would.
"""

from __future__ import annotations

import asyncio
from collections import deque

from switchboard.server.codec import Frame
from switchboard.server.pubsub.base import (
    Backend,
    BackendStatus,
    Deliver,
    DeliverHistory,
    _ignore_history,
)
from switchboard.server.pubsub.history import HistoryLimits, HistoryRead, MemoryHistory, Position


class MemoryHub:
    """Topic -> the backends (nodes) subscribed to it, and every topic's history."""

    def __init__(self) -> None:
        self.topics: dict[str, set[MemoryBackend]] = {}
        self.history: MemoryHistory | None = None


_named_hubs: dict[str, MemoryHub] = {}


def hub_named(name: str) -> MemoryHub:
    return _named_hubs.setdefault(name, MemoryHub())


_Positioned = tuple[str, str, str, Position, int]


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self, hub: MemoryHub | None = None, history: HistoryLimits | None = None) -> None:
        self.hub = hub if hub is not None else MemoryHub()
        if self.hub.history is None:
            self.hub.history = MemoryHistory(history or HistoryLimits())
        self.history_store: MemoryHistory = self.hub.history
        self._deliver: Deliver | None = None
        self._deliver_history: DeliverHistory = _ignore_history
        self._loop: asyncio.AbstractEventLoop | None = None
        self._topics: set[str] = set()
        self._inbox: deque[_Positioned] = deque()
        self._draining = self._drain_scheduled = False
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(
        self, node: str, deliver: Deliver, deliver_history: DeliverHistory = _ignore_history
    ) -> None:
        self._deliver = deliver
        self._deliver_history = deliver_history
        self._loop = asyncio.get_running_loop()
        self._schedule_sweep()

    async def stop(self) -> None:
        for topic in list(self._topics):
            self.unsubscribe(topic)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._inbox.clear()
        self._deliver = None
        self._deliver_history = _ignore_history

    def subscribe(self, topic: str) -> None:
        self._topics.add(topic)
        self.hub.topics.setdefault(topic, set()).add(self)

    def unsubscribe(self, topic: str) -> None:
        self._topics.discard(topic)
        backends = self.hub.topics.get(topic)
        if backends is not None:
            backends.discard(self)
            if not backends:
                del self.hub.topics[topic]

    def publish(self, topic: str, event: str, frame: Frame) -> None:
        for backend in self.hub.topics.get(topic, ()):
            if backend is not self:
                backend._receive(topic, event, frame)

    def _receive(self, topic: str, event: str, frame: Frame) -> None:
        # Delivered on the receiving node's loop, later, as a network would.
        if self._deliver is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver, topic, event, frame)

    def publish_history(self, topic: str, event: str, frame: str, tag: int) -> bool:
        position = self.history_store.append(topic, event, frame)
        subscribed = self.hub.topics.get(topic, ())
        for backend in subscribed:
            own = backend is self
            backend._inbox.append((topic, event, frame, position, tag if own else 0))
            if not own:
                backend._schedule_drain()
        if self in subscribed:
            self._drain()
        return True

    async def history(
        self, topic: str, since: Position | None, upto: int | None = None
    ) -> HistoryRead:
        return self.history_store.read(topic, since, upto)

    def _schedule_drain(self) -> None:
        loop = self._loop
        if self._drain_scheduled or loop is None or loop.is_closed():
            return
        self._drain_scheduled = True
        loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        if self._draining:  # a delivery published again: the loop below takes it, in order
            return
        self._draining = True
        try:
            inbox = self._inbox
            while inbox:
                self._deliver_history(*inbox.popleft())
        finally:
            self._draining = False

    def _schedule_sweep(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        every = max(1.0, min(self.history_store.limits.ttl / 2, 30.0))
        self._sweeper = loop.call_later(every, self._sweep)

    def _sweep(self) -> None:
        self.history_store.sweep(lambda topic: topic in self.hub.topics)
        self._schedule_sweep()

    @property
    def status(self) -> BackendStatus:
        return BackendStatus(
            connected=self._deliver is not None, reason="" if self._deliver else "stopped"
        )
