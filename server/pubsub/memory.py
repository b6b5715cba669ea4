"""In-memory backend: one node, or several nodes inside one process sharing a hub.

``memory://`` gives a node a hub of its own (nothing to carry, publish costs a dict
lookup). ``memory://NAME`` joins the process-wide hub NAME, which is how tests run a
cluster of nodes in one process and check the same contract the Redis backend meets.
"""

from __future__ import annotations

import asyncio

from switchboard.server.codec import Frame
from switchboard.server.pubsub.base import Backend, BackendStatus, Deliver


class MemoryHub:
    """Topic -> the backends (nodes) subscribed to it."""

    def __init__(self) -> None:
        self.topics: dict[str, set[MemoryBackend]] = {}


_named_hubs: dict[str, MemoryHub] = {}


def hub_named(name: str) -> MemoryHub:
    return _named_hubs.setdefault(name, MemoryHub())


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self, hub: MemoryHub | None = None) -> None:
        self.hub = hub if hub is not None else MemoryHub()
        self._deliver: Deliver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._topics: set[str] = set()

    async def start(self, node: str, deliver: Deliver) -> None:
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        for topic in list(self._topics):
            self.unsubscribe(topic)
        self._deliver = None

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

    @property
    def status(self) -> BackendStatus:
        return BackendStatus(
            connected=self._deliver is not None, reason="" if self._deliver else "stopped"
        )
