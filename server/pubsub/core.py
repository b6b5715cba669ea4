"""Local fan-out of broadcasts, and the hand-off to a backend for the other nodes.

A broadcast is encoded once; the same frame object goes to every local subscriber's
``deliver`` and, once, to the backend. Subscribers are the channel servers of sockets (and
internal listeners such as presence); a subscriber that raises is logged and skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from switchboard.server import codec
from switchboard.server.codec import Frame, Payload
from switchboard.server.pubsub.base import Backend, BackendStatus

logger = logging.getLogger("switchboard.pubsub")


class Subscriber(Protocol):
    def deliver(self, event: str, frame: Frame) -> None:
        """Take one broadcast frame; must not block."""


class PubSub:
    """Topics and their local subscribers; the backend behind it is this object's business."""

    def __init__(self, backend: Backend, node: str) -> None:
        self.backend = backend
        self.node = node
        self._topics: dict[str, dict[Subscriber, None]] = {}
        self.broadcasts = 0  # published from this node
        self.deliveries = 0  # frames handed to local subscribers
        #: Called once per local fan-out with (topic, event, subscribers, seconds).
        self.observer: Callable[[str, str, int, float], None] | None = None

    async def start(self) -> None:
        await self.backend.start(self.node, self._deliver_remote)

    async def stop(self) -> None:
        await self.backend.stop()

    @property
    def status(self) -> BackendStatus:
        return self.backend.status

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def on_reconnect(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after the backend came back from an outage; broadcasts sent
        meanwhile were lost, so this is when to resync state shared between nodes."""
        self.backend.add_reconnect_listener(listener)

    async def settled(self) -> None:
        """Return once every subscribe and unsubscribe made so far is in effect cluster-wide."""
        await self.backend.settled()

    def subscribe(self, topic: str, subscriber: Subscriber) -> None:
        subscribers = self._topics.get(topic)
        if subscribers is None:
            subscribers = self._topics[topic] = {}
            self.backend.subscribe(topic)
        subscribers[subscriber] = None

    def unsubscribe(self, topic: str, subscriber: Subscriber) -> None:
        subscribers = self._topics.get(topic)
        if subscribers is None:
            return
        subscribers.pop(subscriber, None)
        if not subscribers:
            del self._topics[topic]
            self.backend.unsubscribe(topic)

    def broadcast(
        self, topic: str, event: str, payload: Payload, exclude: Subscriber | None = None
    ) -> None:
        """Encode once; deliver here (minus ``exclude``) and on every other node."""
        self.broadcast_frame(topic, event, codec.encode_broadcast(topic, event, payload), exclude)

    def broadcast_frame(
        self, topic: str, event: str, frame: Frame, exclude: Subscriber | None = None
    ) -> None:
        self.broadcasts += 1
        self.local_broadcast(topic, event, frame, exclude)
        self.backend.publish(topic, event, frame)

    def broadcast_remote(self, topic: str, event: str, frame: Frame) -> None:
        """Send ``frame`` to the other nodes' subscribers only (node-to-node traffic)."""
        self.backend.publish(topic, event, frame)

    def local_broadcast(
        self, topic: str, event: str, frame: Frame, exclude: Subscriber | None = None
    ) -> int:
        """Deliver to this node's subscribers only; returns how many got it."""
        subscribers = self._topics.get(topic)
        if not subscribers:
            return 0
        started = time.perf_counter()
        delivered = 0
        for subscriber in list(subscribers):  # a delivery may unsubscribe (slow client dropped)
            if subscriber is exclude:
                continue
            try:
                subscriber.deliver(event, frame)
                delivered += 1
            except Exception:
                logger.exception("subscriber %r failed on %s %s", subscriber, topic, event)
        self.deliveries += delivered
        if self.observer is not None:
            self.observer(topic, event, delivered, time.perf_counter() - started)
        return delivered

    def _deliver_remote(self, topic: str, event: str, frame: Frame) -> None:
        self.local_broadcast(topic, event, frame)

    def subscriber_count(self, topic: str) -> int:
        return len(self._topics.get(topic, ()))

    def topics(self) -> dict[str, int]:
        return {topic: len(subscribers) for topic, subscribers in self._topics.items()}
