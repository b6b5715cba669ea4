"""An in-memory LRU cache with per-entry TTL, owned by one actor.

One actor means no locks: every read and write is a message, handled one at a time. Values are
handed out by reference (pykka copies nothing), so store immutable values — bytes, str,
tuples, frozen dataclasses.

Replies: ``CacheGet`` → the value or ``None`` on a miss (so ``None`` cannot be stored);
``CachePut`` → whether it was stored; ``CacheDelete`` → whether the key was present;
``CacheInvalidatePrefix`` → how many keys went; ``CacheStats`` → ``CacheStatsReply``.

Bounds: at most ``max_size`` entries and ``max_bytes`` bytes (keys and values; ``str`` and
``bytes`` by length, other values by their shallow ``sys.getsizeof``); the least recently
used entries go first. A value that alone exceeds ``max_bytes`` is not stored.

Cluster invalidation: ``on_invalidate(kind, key_or_prefix)`` runs after a local
``CacheDelete`` ("delete") or ``CacheInvalidatePrefix`` ("prefix") whose ``propagate`` is
true, even if nothing was cached here — other nodes may hold the key. A node applying an
invalidation that came from elsewhere sends ``propagate=False`` so it is not echoed back.
The callback runs on the actor's thread and must not block.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from switchboard.actors.supervisor import SupervisedActor

__all__ = [
    "CacheActor",
    "CacheDelete",
    "CacheGet",
    "CacheInvalidatePrefix",
    "CachePut",
    "CacheStats",
    "CacheStatsReply",
    "InvalidateKind",
]

logger = logging.getLogger("switchboard.actors")

InvalidateKind = Literal["delete", "prefix"]


@dataclass(frozen=True)
class CacheGet:
    key: str


@dataclass(frozen=True)
class CachePut:
    """Store ``value`` under ``key``; it expires ``ttl`` seconds from now (never if None)."""

    key: str
    value: Any
    ttl: float | None = None

    def __post_init__(self) -> None:
        # Checked here, on the sender's side: raised in the actor from a tell, it would crash it.
        if self.value is None:
            raise ValueError("None cannot be cached: CacheGet uses it to mean a miss")
        if self.ttl is not None and self.ttl <= 0:
            raise ValueError(f"ttl must be > 0 or None, got {self.ttl}")


@dataclass(frozen=True)
class CacheDelete:
    key: str
    propagate: bool = True


@dataclass(frozen=True)
class CacheInvalidatePrefix:
    prefix: str
    propagate: bool = True


@dataclass(frozen=True)
class CacheStats:
    pass


@dataclass(frozen=True)
class CacheStatsReply:
    size: int
    hits: int
    misses: int
    evictions: int
    max_size: int
    expirations: int = 0
    bytes: int = 0
    max_bytes: int | None = None


@dataclass(frozen=True)
class _Entry:
    value: Any
    expires_at: float | None
    size: int

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class CacheActor(SupervisedActor):
    """Owns the cache. ``sweep_interval``: how often expired entries are purged in bulk."""

    def __init__(
        self,
        max_size: int = 10_000,
        *,
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_invalidate: Callable[[InvalidateKind, str], None] | None = None,
        sweep_interval: float = 60.0,
    ) -> None:
        super().__init__()
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1 or None, got {max_bytes}")
        self._max_size = max_size
        self._max_bytes = max_bytes
        self._bytes = 0
        self._clock = clock
        self._on_invalidate = on_invalidate
        self._sweep_interval = sweep_interval
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._hits = self._misses = self._evictions = self._expirations = 0
        self._last_sweep = clock()

    def on_receive(self, message: Any) -> Any:
        now = self._clock()
        if now - self._last_sweep >= self._sweep_interval:
            self._sweep(now)
        match message:
            case CacheGet(key=key):
                return self._get(key, now)
            case CachePut(key=key, value=value, ttl=ttl):
                return self._put(key, value, None if ttl is None else now + ttl)
            case CacheDelete(key=key, propagate=propagate):
                present = self._remove(key) is not None
                if propagate:
                    self._invalidated("delete", key)
                return present
            case CacheInvalidatePrefix(prefix=prefix, propagate=propagate):
                doomed = [key for key in self._entries if key.startswith(prefix)]
                for key in doomed:
                    self._remove(key)
                if propagate:
                    self._invalidated("prefix", prefix)
                return len(doomed)
            case CacheStats():
                return CacheStatsReply(
                    size=len(self._entries),
                    hits=self._hits,
                    misses=self._misses,
                    evictions=self._evictions,
                    max_size=self._max_size,
                    expirations=self._expirations,
                    bytes=self._bytes,
                    max_bytes=self._max_bytes,
                )
        return super().on_receive(message)

    def _get(self, key: str, now: float) -> Any:
        entry = self._entries.get(key)
        if entry is not None and entry.expired(now):
            self._remove(key)
            self._expirations += 1
            entry = None
        if entry is None:
            self._misses += 1
            return None
        self._entries.move_to_end(key)
        self._hits += 1
        return entry.value

    def _put(self, key: str, value: Any, expires_at: float | None) -> bool:
        size = _size(key) + _size(value)
        if self._max_bytes is not None and size > self._max_bytes:
            logger.warning("cache: %d bytes for %r exceed the whole cache; not stored", size, key)
            return False
        self._remove(key)
        self._entries[key] = _Entry(value, expires_at, size)
        self._bytes += size
        while len(self._entries) > self._max_size or (
            self._max_bytes is not None and self._bytes > self._max_bytes
        ):
            self._remove(next(iter(self._entries)))
            self._evictions += 1
        return True

    def _remove(self, key: str) -> _Entry | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size
        return entry

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        expired = [key for key, entry in self._entries.items() if entry.expired(now)]
        for key in expired:
            self._remove(key)
        self._expirations += len(expired)

    def _invalidated(self, kind: InvalidateKind, key_or_prefix: str) -> None:
        if self._on_invalidate is None:
            return
        try:
            self._on_invalidate(kind, key_or_prefix)
        except Exception:
            logger.exception("cache on_invalidate callback failed")


def _size(value: Any) -> int:
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    return sys.getsizeof(value)
