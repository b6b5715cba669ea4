"""A token bucket: pure arithmetic on a caller-supplied clock, no threads, no I/O.

The same class serves the limiter actor (shared, cluster-facing limits) and per-socket code on
the event loop (a socket's own message rate), where a lock or an actor round trip per frame
would cost more than the check itself. Passing ``now`` in keeps it deterministic under test.
"""

from __future__ import annotations

import math

__all__ = ["TokenBucket"]

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
