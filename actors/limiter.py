"""Rate limits shared by every socket of this node, owned by one actor.

Each named bucket type (say ``"join"``: 5 tokens, 1 per second) gets one ``TokenBucket`` per
key (a user id, an IP)::

    limiter = LimiterActor.start({"join": (5, 1.0), "publish": (50, 20.0)})
    decision = await ask(limiter, Acquire("join", "user:42"))
    if not decision.allowed:
        ...  # tell the client to retry after decision.retry_after seconds

An unknown bucket name raises ``UnknownBucketError`` back to the asker (the actor does not
crash): bucket names are constants in code, and a typo that silently disabled a limit would go
unnoticed, so it fails loudly instead of allowing.

Memory stays bounded however many distinct keys arrive. A bucket that has refilled to capacity
is identical to a fresh one, so full buckets are forgotten every ``sweep_interval`` seconds;
and beyond ``max_keys`` the least recently used key is forgotten at once, which under a flood
of distinct keys hands that key a fresh bucket (counted as ``evicted_keys``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from switchboard.actors.supervisor import SupervisedActor
from switchboard.actors.token_bucket import TokenBucket, TokenBuckets

__all__ = [
    "Acquire",
    "Decision",
    "LimiterActor",
    "LimiterStats",
    "LimiterStatsReply",
    "LimiterSweep",
    "UnknownBucketError",
]

logger = logging.getLogger("switchboard.actors")


@dataclass(frozen=True)
class Acquire:
    """Ask to spend ``cost`` tokens from ``key``'s bucket of type ``bucket``."""

    bucket: str
    key: str
    cost: float = 1.0

    def __post_init__(self) -> None:
        if self.cost < 0:
            raise ValueError(f"cost must be >= 0, got {self.cost}")


@dataclass(frozen=True)
class Decision:
    """``retry_after`` is 0.0 when allowed; ``math.inf`` if ``cost`` exceeds the capacity."""

    allowed: bool
    retry_after: float


@dataclass(frozen=True)
class LimiterStats:
    pass


@dataclass(frozen=True)
class LimiterStatsReply:
    allowed: Mapping[str, int]
    rejected: Mapping[str, int]
    tracked_keys: int
    evicted_keys: int


@dataclass(frozen=True)
class LimiterSweep:
    """Forget full buckets now, instead of waiting for the periodic sweep."""


class UnknownBucketError(LookupError):
    """``Acquire`` named a bucket type that the limiter was not configured with."""


class LimiterActor(SupervisedActor):
    def __init__(
        self,
        buckets: Mapping[str, tuple[float, float]],
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
        sweep_interval: float = 30.0,
    ) -> None:
        super().__init__()
        for capacity, refill in buckets.values():
            TokenBucket(capacity, refill, 0.0)  # validates the numbers before anything starts
        self._specs = dict(buckets)
        self._clock = clock
        self._buckets = TokenBuckets(clock(), max_keys=max_keys, sweep_interval=sweep_interval)
        self._allowed = dict.fromkeys(self._specs, 0)
        self._rejected = dict.fromkeys(self._specs, 0)

    def on_receive(self, message: Any) -> Any:
        now = self._clock()
        self._buckets.tidy(now)
        match message:
            case Acquire(bucket=bucket, key=key, cost=cost):
                return self._acquire(bucket, key, cost, now)
            case LimiterStats():
                return LimiterStatsReply(
                    allowed=dict(self._allowed),
                    rejected=dict(self._rejected),
                    tracked_keys=len(self._buckets),
                    evicted_keys=self._buckets.evicted,
                )
            case LimiterSweep():
                self._buckets.sweep(now)
                return None
        return super().on_receive(message)

    def _acquire(self, name: str, key: str, cost: float, now: float) -> Decision:
        spec = self._specs.get(name)
        if spec is None:
            raise UnknownBucketError(f"unknown bucket {name!r}; configured: {sorted(self._specs)}")
        evicted = self._buckets.evicted
        retry_after = self._buckets.take((name, key), *spec, now, cost)
        if evicted == 0 and self._buckets.evicted:
            logger.warning("rate limiter reached max_keys=%d; evicting", self._buckets.max_keys)
        if retry_after == 0.0:
            self._allowed[name] += 1
            return Decision(allowed=True, retry_after=0.0)
        self._rejected[name] += 1
        return Decision(allowed=False, retry_after=retry_after)
