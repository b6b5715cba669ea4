from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.actors import TokenBucket
from switchboard.actors.token_bucket import TokenBuckets


def test_a_new_bucket_allows_a_burst_of_its_capacity():
    bucket = TokenBucket(capacity=3, refill_per_second=1, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]


def test_an_empty_bucket_says_how_long_until_enough_tokens():
    bucket = TokenBucket(capacity=2, refill_per_second=4, now=0.0)
    bucket.take(0.0, cost=2)
    assert bucket.take(0.0) == pytest.approx(0.25)
    assert bucket.take(0.0, cost=2) == pytest.approx(0.5)


def test_a_rejected_take_consumes_nothing():
    bucket = TokenBucket(capacity=2, refill_per_second=1, now=0.0)
    bucket.take(0.0, cost=1.5)
    assert bucket.take(0.0, cost=1) > 0
    assert bucket.take(0.0, cost=0.5) == 0.0


def test_tokens_refill_with_time_but_never_beyond_capacity():
    bucket = TokenBucket(capacity=2, refill_per_second=1, now=0.0)
    bucket.take(0.0, cost=2)
    assert bucket.take(1.0) == 0.0
    assert bucket.take(1.0) > 0
    assert bucket.take(100.0, cost=2) == 0.0
    assert bucket.take(100.0) > 0


def test_the_retry_after_it_returns_is_exactly_enough():
    bucket = TokenBucket(capacity=10, refill_per_second=3, now=5.0)
    bucket.take(5.0, cost=10)
    wait = bucket.take(5.0, cost=7)
    assert bucket.take(5.0 + wait, cost=7) == 0.0


def test_a_clock_that_steps_back_neither_refills_nor_rewinds():
    bucket = TokenBucket(capacity=1, refill_per_second=1, now=10.0)
    bucket.take(10.0)
    assert bucket.take(5.0) > 0
    assert bucket.take(10.5) > 0
    assert bucket.take(11.0) == 0.0


def test_a_cost_above_capacity_or_a_bucket_without_refill_waits_forever():
    assert TokenBucket(2, 1, now=0.0).take(0.0, cost=3) == math.inf
    frozen = TokenBucket(1, 0, now=0.0)
    frozen.take(0.0)
    assert frozen.take(1e9) == math.inf


def test_a_bucket_is_full_again_after_idling():
    bucket = TokenBucket(capacity=4, refill_per_second=2, now=0.0)
    bucket.take(0.0, cost=4)
    assert not bucket.is_full(1.0)
    assert bucket.is_full(2.0)


def test_nonsense_parameters_are_refused():
    with pytest.raises(ValueError):
        TokenBucket(0, 1, now=0.0)
    with pytest.raises(ValueError):
        TokenBucket(1, -1, now=0.0)
    with pytest.raises(ValueError):
        TokenBucket(1, 1, now=0.0).take(0.0, cost=-1)


@given(
    capacity=st.floats(0.5, 100),
    rate=st.floats(0.1, 100),
    steps=st.lists(st.tuples(st.floats(0, 2), st.floats(0, 5)), max_size=60),
)
def test_no_schedule_of_takes_gets_more_than_the_burst_plus_the_refill(capacity, rate, steps):
    bucket = TokenBucket(capacity, rate, now=0.0)
    now = granted = 0.0
    for delay, cost in steps:
        now += delay
        retry_after = bucket.take(now, cost)
        assert retry_after >= 0.0
        if retry_after == 0.0:
            granted += cost
        assert 0.0 <= bucket.tokens <= capacity
    assert granted <= capacity + rate * now + 1e-6


# -- TokenBuckets: one per key


def test_each_key_gets_its_own_bucket_of_the_size_asked() -> None:
    buckets = TokenBuckets(0.0)
    assert buckets.take("a", 1, 1.0, 0.0) == 0.0
    assert buckets.take("a", 1, 1.0, 0.0) == 1.0
    assert buckets.take("b", 2, 1.0, 0.0) == 0.0
    assert buckets.take("b", 2, 1.0, 0.0) == 0.0
    assert len(buckets) == 2


def test_full_buckets_are_forgotten_once_the_sweep_interval_passed() -> None:
    buckets = TokenBuckets(0.0, sweep_interval=10.0)
    buckets.take("idle", 1, 1.0, 0.0)
    buckets.take("busy", 30, 1.0, 0.0, cost=30)
    buckets.tidy(9.0)
    assert len(buckets) == 2, "not swept before the interval"
    buckets.tidy(10.0)
    assert len(buckets) == 1, "the idle key refilled and went; the busy one has 10 of 30"


def test_past_max_keys_the_least_recently_used_key_is_forgotten() -> None:
    buckets = TokenBuckets(0.0, max_keys=2)
    buckets.take("a", 1, 0.1, 0.0)
    buckets.take("b", 1, 0.1, 0.0)
    buckets.take("a", 1, 0.1, 0.0)  # a is used again: b is now the oldest
    buckets.take("c", 1, 0.1, 0.0)
    assert len(buckets) == 2 and buckets.evicted == 1
    assert buckets.take("a", 1, 0.1, 0.0) > 0, "a kept its empty bucket"
    assert buckets.take("b", 1, 0.1, 0.0) == 0.0, "b was forgotten: a fresh bucket"
