"""A history topic on one node: its broadcasts go to local subscribers in position order,
each exactly once, and gaps are filled from the backend's history.

Within an epoch a topic's offsets grow by one per broadcast, and the backend delivers them
in order; but a node misses those published while its connection was down, and may get
one twice around a reconnection. So the sequencer keeps the last position it delivered:
the next offset is delivered, an older one dropped as a duplicate, and one further ahead
(a gap) or from another epoch is held while the missing ones are read from the backend
and delivered first. If they are not all kept any more, or the epoch changed (the history
behind this node's position is lost), the topic's subscribers are told
(``history_lost``): their clients rejoin, and learn they did not recover.

A new sequencer starts by reading the topic's latest position. While a read is in flight
(or after one failed, until one succeeds) arrivals are held. Joins attach only when the
sequencer is :attr:`ready`, at :attr:`position`: everything delivered to them afterwards
comes after it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from switchboard.server.pubsub.base import Unavailable
from switchboard.server.pubsub.history import Position

if TYPE_CHECKING:
    from switchboard.server.pubsub.core import PubSub, Subscriber

logger = logging.getLogger("switchboard.pubsub")

MAX_EXCLUDED = 1000  # broadcast_from senders remembered until their broadcast comes back

_Arrival = tuple[str, str, Position, int]


class Sequencer:
    __slots__ = (
        "topic",
        "position",
        "excluded",
        "_pubsub",
        "_held",
        "_reading",
        "_stale",
        "_waiters",
    )

    def __init__(self, topic: str, pubsub: PubSub) -> None:
        self.topic = topic
        #: The last position delivered here (or where this node started the topic).
        self.position: Position | None = None
        #: tag -> the subscriber a ``broadcast_from`` skips, until its broadcast comes back.
        self.excluded: dict[int, Subscriber] = {}
        self._pubsub = pubsub
        self._held: list[_Arrival] = []
        self._reading: asyncio.Task[None] | None = None
        self._stale = False  # the last read failed
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def ready(self) -> bool:
        return self.position is not None and self._reading is None and not self._stale

    async def wait_ready(self) -> None:
        """Start (or retry a failed read) if needed and return once ready; raises
        :class:`Unavailable` if the backend cannot be read."""
        while not self.ready:
            if self._reading is None:
                self._read()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def exclude(self, subscriber: Subscriber, tag: int) -> int:
        if len(self.excluded) >= MAX_EXCLUDED:
            del self.excluded[next(iter(self.excluded))]
        self.excluded[tag] = subscriber
        return tag

    def receive(self, event: str, frame: str, position: Position, tag: int) -> None:
        """A positioned broadcast from the backend."""
        current = self.position
        if current is not None and self._reading is None and not self._stale:
            if position.epoch == current.epoch:
                if position.offset <= current.offset:
                    return  # delivered already
                if position.offset == current.offset + 1:
                    self._deliver(event, frame, position, tag)
                    return
        self._held.append((event, frame, position, tag))
        if self._reading is None and current is not None:
            self._read()

    def catch_up(self) -> None:
        """The backend reconnected: read what this node may have missed meanwhile."""
        if self._reading is None and self.position is not None:
            self._read()

    def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            self._reading = None
        self._wake(Unavailable(f"{self.topic}: stopped"))

    def _deliver(self, event: str, frame: str, position: Position, tag: int) -> None:
        self.position = position
        exclude = self.excluded.pop(tag, None) if tag else None
        self._pubsub.deliver_positioned(self.topic, event, frame, position, exclude)

    def _read(self) -> None:
        self._reading = asyncio.get_running_loop().create_task(
            self._read_history(), name=f"history read {self.topic}"
        )

    async def _read_history(self) -> None:
        since = self.position
        try:
            read = await self._pubsub.backend.history(self.topic, since)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._reading, self._stale = None, True
            logger.warning("reading the history of %s failed: %s", self.topic, exc)
            self._wake(exc if isinstance(exc, Unavailable) else Unavailable(str(exc)))
            return
        self._reading, self._stale = None, False
        if since is None:
            self.position = read.top
        elif read.entries is None:
            logger.warning(
                "%s: broadcasts after %s are no longer kept (now at %s); its channels rejoin",
                self.topic,
                since,
                read.top,
            )
            self.position = read.top
            self._pubsub.history_lost(self.topic)
        else:
            epoch = read.top.epoch
            for offset, event, frame in read.entries:
                self._deliver(event, frame, Position(epoch, offset), 0)
        held, self._held = self._held, []
        for arrival in held:
            self.receive(*arrival)
        if self.ready:
            self._wake(None)

    def _wake(self, error: Exception | None) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
