"""Local fan-out of broadcasts, and the hand-off to a backend for the other nodes.

A broadcast is encoded once; the same frame object goes to every local subscriber's
``deliver`` and, once, to the backend. Subscribers are the channel servers of sockets (and
internal listeners such as presence); a subscriber that raises is logged and skipped.

Joins
    :meth:`PubSub.join` is how a channel subscribes: it returns once a broadcast published
    anywhere in the cluster from then on is sure to reach the subscriber. The first local
    subscriber of a topic waits (at most ``confirm_timeout``) for the backend to confirm
    its subscription (Redis: the SUBSCRIBE is answered); later ones find it confirmed and
    wait for nothing. During an outage a join waits for nothing either, and says so in the
    log.

History topics
    Topics for which ``history(topic)`` is true keep their broadcasts (text ones: a binary
    broadcast frame has no field for a position) in the backend's history. Such a
    broadcast is handed to the backend, which gives it its position and delivers it back
    to every subscribed node, this one included; a :class:`~.sequencer.Sequencer` per
    topic puts positions in order on this node and fills gaps. Each delivery is encoded
    once per node with its position as the frame's ``ref``
    (``[null, "<position>", topic, event, payload]``) and the same text goes to every
    local subscriber. A join on a history topic attaches at the node's current position
    for the topic and, given ``since``, reads what came after ``since`` up to there: the
    caller replays that, then what arrived since it attached; nothing overlaps and
    nothing falls between (the caller holds what arrives while it waits). Presence diffs
    and other node-local broadcasts (:meth:`local_broadcast`) are not history.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from switchboard.server import codec
from switchboard.server.codec import Frame, Payload
from switchboard.server.pubsub.base import Backend, BackendStatus, Unavailable
from switchboard.server.pubsub.history import Position
from switchboard.server.pubsub.sequencer import Sequencer

logger = logging.getLogger("switchboard.pubsub")

CONFIRM_TIMEOUT = 5.0  # seconds a first join waits for the backend's confirmation


class Subscriber(Protocol):
    def deliver(self, event: str, frame: Frame) -> None:
        """Take one broadcast frame; must not block."""


@dataclass(frozen=True, slots=True)
class Joined:
    """A join on a history topic: the topic's position when the subscriber attached,
    whether it recovered from ``since``, and the (event, frame) pairs to replay."""

    position: Position
    recovered: bool
    replay: list[tuple[str, str]] = field(default_factory=list)


class _Attaching:
    """Stands in for a joiner while its join waits, keeping the topic subscribed."""

    __slots__ = ()

    def deliver(self, event: str, frame: Frame) -> None:
        return None


class PubSub:
    """Topics and their local subscribers; the backend behind it is this object's business."""

    def __init__(
        self,
        backend: Backend,
        node: str,
        *,
        history: Callable[[str], bool] | None = None,
        confirm_timeout: float = CONFIRM_TIMEOUT,
    ) -> None:
        self.backend = backend
        self.node = node
        self.confirm_timeout = confirm_timeout
        self._history = history
        self._topics: dict[str, dict[Subscriber, None]] = {}
        self._confirming: dict[str, asyncio.Future[None]] = {}
        self._sequencers: dict[str, Sequencer] = {}
        self._tags = itertools.count(1)
        self._unconfirmed_reason: str | None = None
        self.broadcasts = 0  # published from this node
        self.deliveries = 0  # frames handed to local subscribers
        #: Called once per local fan-out with (topic, event, subscribers, seconds).
        self.observer: Callable[[str, str, int, float], None] | None = None

    async def start(self) -> None:
        await self.backend.start(self.node, self._deliver_remote, self._deliver_history)
        self.backend.add_reconnect_listener(self._reconnected)

    async def stop(self) -> None:
        for sequencer in self._sequencers.values():
            sequencer.close()
        for confirmation in self._confirming.values():
            confirmation.cancel()
        self._confirming.clear()
        await self.backend.stop()

    @property
    def status(self) -> BackendStatus:
        return self.backend.status

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def keeps_history(self, topic: str) -> bool:
        return self._history is not None and self._history(topic)

    def on_reconnect(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after the backend came back from an outage; broadcasts sent
        meanwhile were lost, so this is when to resync state shared between nodes."""
        self.backend.add_reconnect_listener(listener)

    async def settled(self) -> None:
        """Return once every subscribe and unsubscribe made so far is in effect cluster-wide."""
        await self.backend.settled()

    # -- subscribing -----------------------------------------------------------------------

    def subscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Deliver ``topic`` to ``subscriber`` from now on (see :meth:`join` for channels)."""
        subscribers = self._topics.get(topic)
        if subscribers is None:
            subscribers = self._topics[topic] = {}
            confirmation = self.backend.subscribe(topic)
            if confirmation is not None and not confirmation.done():
                self._confirming[topic] = confirmation
                confirmation.add_done_callback(lambda done: self._confirmed(topic, done))
        subscribers[subscriber] = None

    def unsubscribe(self, topic: str, subscriber: Subscriber) -> None:
        subscribers = self._topics.get(topic)
        if subscribers is None:
            return
        subscribers.pop(subscriber, None)
        if not subscribers:
            del self._topics[topic]
            confirmation = self._confirming.pop(topic, None)
            if confirmation is not None:
                confirmation.cancel()
            sequencer = self._sequencers.pop(topic, None)
            if sequencer is not None:
                sequencer.close()
            self.backend.unsubscribe(topic)

    async def join(self, topic: str, subscriber: Subscriber, since: object = None) -> Joined | None:
        """Subscribe once a broadcast published anywhere from now on will reach ``subscriber``.

        On a history topic, returns where it attached and, given ``since`` (a position as
        a client sent it), whether everything after ``since`` is replayed. Raises
        :class:`Unavailable` (leaving nothing subscribed) if the history cannot be read.
        """
        attaching = _Attaching()
        self.subscribe(topic, attaching)
        try:
            await self._confirm(topic)
            sequencer = None
            if self.keeps_history(topic):
                sequencer = self._sequencers.get(topic)
                if sequencer is None:
                    sequencer = self._sequencers[topic] = Sequencer(topic, self)
                await sequencer.wait_ready()
        except BaseException:
            self.unsubscribe(topic, attaching)
            raise
        subscribers = self._topics[topic]
        del subscribers[attaching]
        subscribers[subscriber] = None
        if sequencer is None:
            return None
        position = sequencer.position
        assert position is not None
        try:
            return await self._recover(topic, position, since)
        except BaseException:
            self.unsubscribe(topic, subscriber)
            raise

    async def _confirm(self, topic: str) -> None:
        confirmation = self._confirming.get(topic)
        if confirmation is None:
            return
        status = self.backend.status
        if not status.connected:
            self._unconfirmed(topic, f"{self.backend.name} unavailable: {status.reason}")
            return
        await asyncio.wait({confirmation}, timeout=self.confirm_timeout)
        if not confirmation.done():
            self._unconfirmed(topic, f"no confirmation within {self.confirm_timeout} s")

    def _confirmed(self, topic: str, confirmation: asyncio.Future[None]) -> None:
        if self._confirming.get(topic) is confirmation:
            del self._confirming[topic]
        if self._unconfirmed_reason is not None and not confirmation.cancelled():
            self._unconfirmed_reason = None

    def _unconfirmed(self, topic: str, reason: str) -> None:
        if reason != self._unconfirmed_reason:  # once per outage, not once per join
            logger.warning(
                "answering joins (first: %s) before the subscription is confirmed: %s",
                topic,
                reason,
                extra={"event": "join_unconfirmed", "topic": topic},
            )
            self._unconfirmed_reason = reason

    async def _recover(self, topic: str, position: Position, since: object) -> Joined:
        if since is None:
            return Joined(position, recovered=False)
        start = Position.parse(since)
        if start is None or start.epoch != position.epoch or start.offset > position.offset:
            return Joined(position, recovered=False)
        if start.offset == position.offset:
            return Joined(position, recovered=True)
        read = await self.backend.history(topic, start, position.offset)
        if read.entries is None:
            return Joined(position, recovered=False)
        epoch = position.epoch
        replay = [
            (event, codec.with_ref(frame, str(Position(epoch, offset))))
            for offset, event, frame in read.entries
        ]
        return Joined(position, recovered=True, replay=replay)

    # -- broadcasting ----------------------------------------------------------------------

    def broadcast(
        self, topic: str, event: str, payload: Payload, exclude: Subscriber | None = None
    ) -> None:
        """Encode once; deliver here (minus ``exclude``) and on every other node.

        On a history topic raises :class:`Unavailable` if the broadcast cannot be kept.
        """
        self.broadcast_frame(topic, event, codec.encode_broadcast(topic, event, payload), exclude)

    def broadcast_frame(
        self, topic: str, event: str, frame: Frame, exclude: Subscriber | None = None
    ) -> None:
        if (
            self._history is not None
            and type(frame) is str
            and frame.startswith(codec.BROADCAST_HEAD)
            and self._history(topic)
        ):
            self._broadcast_history(topic, event, frame, exclude)
            return
        self.broadcasts += 1
        self.local_broadcast(topic, event, frame, exclude)
        self.backend.publish(topic, event, frame)

    def _broadcast_history(
        self, topic: str, event: str, frame: str, exclude: Subscriber | None
    ) -> None:
        sequencer = self._sequencers.get(topic) if exclude is not None else None
        tag = 0 if sequencer is None else sequencer.exclude(exclude, next(self._tags))  # type: ignore[arg-type]
        if not self.backend.publish_history(topic, event, frame, tag):
            if sequencer is not None:
                sequencer.excluded.pop(tag, None)
            raise Unavailable(
                f"cannot keep a broadcast on {topic} now ({self.status.reason or 'buffer full'})"
            )
        self.broadcasts += 1

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

    def _deliver_history(
        self, topic: str, event: str, frame: str, position: Position, tag: int
    ) -> None:
        sequencer = self._sequencers.get(topic)
        if sequencer is not None:
            sequencer.receive(event, frame, position, tag)
        elif topic in self._topics:  # subscribers that did not join (no order kept for them)
            self.deliver_positioned(topic, event, frame, position, None)

    def deliver_positioned(
        self,
        topic: str,
        event: str,
        frame: str,
        position: Position,
        exclude: Subscriber | None,
    ) -> None:
        """Fan out a history broadcast here, with its position as the frame's ref."""
        self.local_broadcast(topic, event, codec.with_ref(frame, str(position)), exclude)

    def history_lost(self, topic: str) -> None:
        """Tell the topic's subscribers that broadcasts they should have had are gone."""
        for subscriber in list(self._topics.get(topic, ())):
            lost = getattr(subscriber, "history_lost", None)
            if lost is not None:
                try:
                    lost()
                except Exception:
                    logger.exception("subscriber %r failed on history_lost", subscriber)

    def _reconnected(self) -> None:
        for sequencer in list(self._sequencers.values()):
            sequencer.catch_up()

    def subscriber_count(self, topic: str) -> int:
        return len(self._topics.get(topic, ()))

    def topics(self) -> dict[str, int]:
        return {topic: len(subscribers) for topic, subscribers in self._topics.items()}
