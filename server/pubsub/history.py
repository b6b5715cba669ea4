"""Positions in a topic's history, the bounds on what is kept, and the in-memory ring.

A broadcast on a history topic gets a :class:`Position`: an ``offset`` that counts the
topic's broadcasts (1, 2, 3, ... with no gap) and an ``epoch`` naming the history it
belongs to. The epoch changes whenever the history behind it is lost (the node restarted,
Redis lost its data, the topic stayed quiet long enough to be freed), and offsets start
again from 1 in the new epoch; so a position from a lost history never matches a kept one,
and a client is never told it recovered when it did not. On the wire a position is the
string ``"<epoch>.<offset>"`` (the epoch starts with a letter): opaque to clients, and
never a bare integer, which phoenix.js would confuse with its own message refs.

Every backend keeps a topic's latest broadcasts within :class:`HistoryLimits` and answers
a read with :class:`HistoryRead`. :class:`MemoryHistory` is the single-node store: a ring
per topic, bounded in count, age and bytes; a topic's ring is freed once it has been quiet
(no broadcast, no read) for ``ttl`` seconds and no node subscribes to it, after which the
topic starts a new epoch. Pure data and a clock; no asyncio.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

#: Broadcasts kept per topic, and for how long, unless the settings say otherwise.
DEFAULT_SIZE = 100
DEFAULT_TTL = 300.0
#: Bytes of frames kept per topic (and the most a recovery replays): a replay must fit in
#: a client's outbox with room to spare, so the default is half of its default limit.
DEFAULT_MAX_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class Position:
    """Where a broadcast sits in its topic's history."""

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}.{self.offset}"

    @classmethod
    def parse(cls, text: object) -> Position | None:
        """The position written as ``text``, or None if it is not one."""
        if not isinstance(text, str) or len(text) > 64:
            return None
        epoch, dot, offset = text.rpartition(".")
        if not (dot and epoch[:1].isalpha() and epoch.isalnum() and epoch.isascii()):
            return None
        if not (offset.isdigit() and offset.isascii()):
            return None
        return cls(epoch, int(offset))


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    """What each topic's history keeps: the latest ``size`` broadcasts, none older than
    ``ttl`` seconds, at most ``max_bytes`` of frames (memory; Redis bounds it when read)."""

    size: int = DEFAULT_SIZE
    ttl: float = DEFAULT_TTL
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        if self.size < 1 or self.ttl <= 0 or self.max_bytes < 1:
            raise ValueError(f"history limits must be positive, got {self!r}")


#: A kept broadcast: (offset, event, frame); its epoch is the read's.
Entry = tuple[int, str, str]


@dataclass(frozen=True, slots=True)
class HistoryRead:
    """What a backend answers when asked for a topic's history.

    ``top`` is the topic's latest position (offset 0 when nothing was broadcast yet).
    ``entries`` are the broadcasts after the asked-for position, up to the asked-for end,
    in order and without a gap; None when they are not all kept any more (or the position
    is from another epoch), so the caller cannot recover from there.
    """

    top: Position
    entries: list[Entry] | None = None


def complete(since: int, upto: int, entries: list[Entry], max_bytes: int) -> list[Entry] | None:
    """``entries`` if they are exactly the offsets ``since+1 .. upto`` within ``max_bytes``."""
    if len(entries) != upto - since or (entries and entries[0][0] != since + 1):
        return None
    if sum(len(frame) for _, _, frame in entries) > max_bytes:
        return None
    return entries


class _Ring:
    __slots__ = ("epoch", "top", "entries", "size", "touched")

    def __init__(self, epoch: str, now: float) -> None:
        self.epoch = epoch
        self.top = 0
        self.entries: deque[tuple[int, str, str, float]] = deque()
        self.size = 0  # bytes of the frames in entries
        self.touched = now


class MemoryHistory:
    """Every topic's ring in one process (shared by the nodes of a memory hub)."""

    def __init__(self, limits: HistoryLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._rings: dict[str, _Ring] = {}
        self._boot = "m" + secrets.token_hex(4)
        self._generations = itertools.count(1)

    def __len__(self) -> int:
        return len(self._rings)

    def append(self, topic: str, event: str, frame: str) -> Position:
        """Keep a broadcast; returns its position."""
        now = self._clock()
        ring = self._ring(topic, now)
        ring.top += 1
        ring.entries.append((ring.top, event, frame, now))
        ring.size += len(frame)
        self._trim(ring, now)
        return Position(ring.epoch, ring.top)

    def read(self, topic: str, since: Position | None, upto: int | None = None) -> HistoryRead:
        """The latest position, and the entries after ``since`` up to offset ``upto``
        (default: the latest) if ``since`` is given and they are all still kept."""
        now = self._clock()
        ring = self._ring(topic, now)
        self._trim(ring, now)
        top = Position(ring.epoch, ring.top)
        if since is None or since.epoch != ring.epoch:
            return HistoryRead(top)
        end = ring.top if upto is None else min(upto, ring.top)
        if since.offset > end:
            return HistoryRead(top)
        entries = [
            (offset, event, frame)
            for offset, event, frame, _ in ring.entries
            if since.offset < offset <= end
        ]
        return HistoryRead(top, complete(since.offset, end, entries, self.limits.max_bytes))

    def sweep(self, subscribed: Callable[[str], bool]) -> int:
        """Free the rings of quiet topics nobody subscribes to; returns how many."""
        now = self._clock()
        quiet = [
            topic
            for topic, ring in self._rings.items()
            if now - ring.touched > self.limits.ttl and not subscribed(topic)
        ]
        for topic in quiet:
            del self._rings[topic]
        for ring in self._rings.values():
            self._trim(ring, now)
        return len(quiet)

    def _ring(self, topic: str, now: float) -> _Ring:
        ring = self._rings.get(topic)
        if ring is None:
            ring = self._rings[topic] = _Ring(f"{self._boot}{next(self._generations)}", now)
        ring.touched = now
        return ring

    def _trim(self, ring: _Ring, now: float) -> None:
        limits, entries = self.limits, ring.entries
        oldest = now - limits.ttl
        while entries and (
            len(entries) > limits.size or ring.size > limits.max_bytes or entries[0][3] < oldest
        ):
            ring.size -= len(entries.popleft()[2])
