"""Token buckets: pure arithmetic on a caller-supplied clock, no threads, no I/O.

:class:`TokenBucket` serves per-socket code on the event loop (a socket's own message rate),
where a lock or an actor round trip per frame would cost more than the check itself;
:class:`TokenBuckets` keeps one per key in bounded memory, for the limiter actor and for
the connect rate per client address. Passing ``now`` in keeps them deterministic under test.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["TokenBucket", "TokenBuckets"]

# Refill arithmetic in floats can leave 0.9999999 tokens where 1 was meant; without slack a
# client would be told to retry after a few nanoseconds.
_EPSILON = 1e-9


class TokenBucket:
    """Holds up to ``capacity`` tokens, refilled continuously at ``refill_per_second``.

    A full bucket allows a burst of ``capacity``; after that, ``refill_per_second`` sustained.
    Not thread-safe: give each owner (an actor, a socket) its own.
    """

    __slots__ = ("capacity", "refill_per_second", "tokens", "updated")

    def __init__(self, capacity: float, refill_per_second: float, now: float) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        if refill_per_second < 0:
            raise ValueError(f"refill_per_second must be >= 0, got {refill_per_second}")
        self.capacity = float(capacity)
        self.refill_per_second = float(refill_per_second)
        self.tokens = self.capacity
        self.updated = now

    def __repr__(self) -> str:
        return (
            f"TokenBucket(tokens={self.tokens:.3f}, capacity={self.capacity}, "
            f"refill_per_second={self.refill_per_second})"
        )

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens if there are enough.

        Returns 0.0 when allowed, otherwise the seconds to wait until ``cost`` tokens will be
        there (nothing is taken then). ``math.inf`` if they never will be: ``cost`` exceeds
        ``capacity``, or the bucket does not refill.
        """
        if cost < 0:
            raise ValueError(f"cost must be >= 0, got {cost}")
        self._refill(now)
        if self.tokens + _EPSILON >= cost:
            self.tokens = max(0.0, self.tokens - cost)
            return 0.0
        if cost > self.capacity or self.refill_per_second == 0:
            return math.inf
        return (cost - self.tokens) / self.refill_per_second

    def is_full(self, now: float) -> bool:
        """True if the bucket is back to capacity: indistinguishable from a fresh one."""
        self._refill(now)
        return self.tokens + _EPSILON >= self.capacity

    def _refill(self, now: float) -> None:
        # A clock that steps backwards neither refills nor moves ``updated`` back, so the
        # same interval can never be credited twice.
        if now > self.updated:
            elapsed = now - self.updated
            self.tokens = min(self.capacity, self.tokens + elapsed * self.refill_per_second)
            self.updated = now


class TokenBuckets:
    """A :class:`TokenBucket` per key (a client address, a bucket type and a user id), made
    on first use with the size the caller gives, in bounded memory.

    A bucket back at capacity is identical to a fresh one, so full buckets are forgotten
    every ``sweep_interval`` seconds; beyond ``max_keys`` the least recently used key is
    forgotten at once, which under a flood of distinct keys hands that key a fresh bucket
    (counted in ``evicted``).
    """

    __slots__ = ("max_keys", "sweep_interval", "evicted", "_buckets", "_last_sweep")

    def __init__(
        self, now: float, *, max_keys: int = 100_000, sweep_interval: float = 30.0
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.max_keys = max_keys
        self.sweep_interval = sweep_interval
        self.evicted = 0
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()
        self._last_sweep = now

    def __len__(self) -> int:
        return len(self._buckets)

    def take(
        self,
        key: Hashable,
        capacity: float,
        refill_per_second: float,
        now: float,
        cost: float = 1.0,
    ) -> float:
        """:meth:`TokenBucket.take` on ``key``'s bucket: 0.0 if allowed, else seconds to wait."""
        self.tidy(now)
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.max_keys:
                buckets.popitem(last=False)
                self.evicted += 1
            bucket = buckets[key] = TokenBucket(capacity, refill_per_second, now)
        else:
            buckets.move_to_end(key)
        return bucket.take(now, cost)

    def tidy(self, now: float) -> None:
        """Forget the full buckets if ``sweep_interval`` has passed since the last sweep."""
        if now - self._last_sweep >= self.sweep_interval:
            self.sweep(now)

    def sweep(self, now: float) -> None:
        """Forget the full buckets now."""
        self._last_sweep = now
        full = [key for key, bucket in self._buckets.items() if bucket.is_full(now)]
        for key in full:
            del self._buckets[key]
