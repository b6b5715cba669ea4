from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest

from switchboard.actors import (
    Acquire,
    Decision,
    LimiterActor,
    LimiterStats,
    LimiterSweep,
    UnknownBucketError,
)

BUCKETS = {"join": (3.0, 1.0), "publish": (10.0, 5.0)}


@pytest.fixture
def start_limiter(clock) -> Iterator[Callable[..., pykka.ActorRef[Any]]]:
    refs: list[pykka.ActorRef[Any]] = []

    def start(buckets: Any = BUCKETS, **options: Any) -> pykka.ActorRef[Any]:
        options.setdefault("clock", clock)
        refs.append(LimiterActor.start(buckets, **options))
        return refs[-1]

    yield start
    for ref in refs:
        ref.stop()


def acquire(limiter: pykka.ActorRef[Any], bucket: str, key: str, cost: float = 1.0) -> Decision:
    return limiter.ask(Acquire(bucket, key, cost), block=True, timeout=2)


def test_a_burst_up_to_capacity_is_allowed_then_rejected_with_a_retry_after(start_limiter):
    limiter = start_limiter()

    decisions = [acquire(limiter, "join", "user:1") for _ in range(4)]

    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[0] == Decision(allowed=True, retry_after=0.0)
    assert decisions[3].retry_after == pytest.approx(1.0)


def test_tokens_come_back_as_time_passes(start_limiter, clock):
    limiter = start_limiter()
    for _ in range(3):
        acquire(limiter, "join", "user:1")

    clock.advance(1.0)

    assert acquire(limiter, "join", "user:1").allowed
    assert not acquire(limiter, "join", "user:1").allowed


def test_each_key_and_each_bucket_type_has_its_own_bucket(start_limiter):
    limiter = start_limiter()
    for _ in range(3):
        acquire(limiter, "join", "user:1")

    assert not acquire(limiter, "join", "user:1").allowed
    assert acquire(limiter, "join", "user:2").allowed
    assert acquire(limiter, "publish", "user:1").allowed


def test_a_cost_above_the_capacity_is_never_allowed(start_limiter):
    limiter = start_limiter()
    assert acquire(limiter, "join", "user:1", cost=4) == Decision(False, math.inf)


def test_an_unknown_bucket_raises_to_the_asker_without_crashing_the_limiter(start_limiter):
    limiter = start_limiter()

    with pytest.raises(UnknownBucketError, match="unknown bucket 'joni'"):
        acquire(limiter, "joni", "user:1")

    assert acquire(limiter, "join", "user:1").allowed


def test_stats_count_allowed_and_rejected_per_bucket(start_limiter):
    limiter = start_limiter()
    for _ in range(5):
        acquire(limiter, "join", "user:1")
    acquire(limiter, "publish", "user:1")

    stats = limiter.ask(LimiterStats(), timeout=2)

    assert stats.allowed == {"join": 3, "publish": 1}
    assert stats.rejected == {"join": 2, "publish": 0}
    assert stats.tracked_keys == 2


def test_full_idle_buckets_are_forgotten_by_the_periodic_sweep(start_limiter, clock):
    limiter = start_limiter(sweep_interval=30)
    for i in range(50):
        acquire(limiter, "join", f"user:{i}")
    acquire(limiter, "join", "busy", cost=3)

    clock.advance(2.0)  # "busy" still needs a third second to refill
    limiter.ask(LimiterSweep(), timeout=2)
    assert limiter.ask(LimiterStats(), timeout=2).tracked_keys == 1

    clock.advance(30.0)
    assert limiter.ask(LimiterStats(), timeout=2).tracked_keys == 0


def test_the_number_of_tracked_keys_never_exceeds_max_keys(start_limiter):
    limiter = start_limiter(max_keys=10)
    for i in range(100):
        acquire(limiter, "publish", f"ip:{i}", cost=10)

    stats = limiter.ask(LimiterStats(), timeout=2)

    assert stats.tracked_keys == 10
    assert stats.evicted_keys == 90


def test_a_recently_used_key_survives_eviction(start_limiter):
    limiter = start_limiter(max_keys=3)
    for key in ("a", "b", "c"):
        acquire(limiter, "join", key, cost=3)
    acquire(limiter, "join", "a")  # refreshes a; b is now the least recently used
    acquire(limiter, "join", "d")

    assert not acquire(limiter, "join", "a").allowed  # a kept its empty bucket
    assert acquire(limiter, "join", "b").allowed  # b was forgotten: a fresh bucket


def test_a_misconfigured_bucket_is_refused_before_the_actor_starts():
    with pytest.raises(ValueError, match="capacity"):
        LimiterActor({"join": (0.0, 1.0)})
