from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest

from switchboard.actors import (
    CacheActor,
    CacheDelete,
    CacheGet,
    CacheInvalidatePrefix,
    CachePut,
    CacheStats,
    ChildSpec,
    InjectFault,
    ask,
)


@pytest.fixture
def start_cache(clock) -> Iterator[Callable[..., pykka.ActorRef[Any]]]:
    refs: list[pykka.ActorRef[Any]] = []

    def start(**options: Any) -> pykka.ActorRef[Any]:
        options.setdefault("clock", clock)
        refs.append(CacheActor.start(**options))
        return refs[-1]

    yield start
    for ref in refs:
        ref.stop()


def put(cache: pykka.ActorRef[Any], key: str, value: Any, ttl: float | None = None) -> None:
    cache.ask(CachePut(key, value, ttl), timeout=2)


def get(cache: pykka.ActorRef[Any], key: str) -> Any:
    return cache.ask(CacheGet(key), timeout=2)


def test_a_get_after_a_put_is_a_hit_and_an_unknown_key_a_miss(start_cache):
    cache = start_cache()
    put(cache, "user:1", b'{"name":"ada"}')

    assert get(cache, "user:1") == b'{"name":"ada"}'
    assert get(cache, "user:2") is None
    stats = cache.ask(CacheStats(), timeout=2)
    assert (stats.size, stats.hits, stats.misses) == (1, 1, 1)


def test_an_entry_expires_after_its_ttl(start_cache, clock):
    cache = start_cache()
    put(cache, "short", "v", ttl=5)
    put(cache, "forever", "v")

    clock.advance(4.9)
    assert get(cache, "short") == "v"
    clock.advance(0.1)
    assert get(cache, "short") is None
    clock.advance(1e6)
    assert get(cache, "forever") == "v"
    assert cache.ask(CacheStats(), timeout=2).expirations == 1


def test_expired_entries_are_swept_even_if_nobody_reads_them(start_cache, clock):
    cache = start_cache(sweep_interval=60)
    for i in range(10):
        put(cache, f"k{i}", i, ttl=1)
    put(cache, "kept", "v", ttl=600)

    clock.advance(61)
    stats = cache.ask(CacheStats(), timeout=2)

    assert stats.size == 1
    assert stats.expirations == 10


def test_the_least_recently_used_entry_is_evicted_when_full(start_cache):
    cache = start_cache(max_size=3)
    for key in "abc":
        put(cache, key, key)
    get(cache, "a")  # now b is the least recently used
    put(cache, "d", "d")

    assert [get(cache, key) for key in "abcd"] == ["a", None, "c", "d"]
    stats = cache.ask(CacheStats(), timeout=2)
    assert (stats.size, stats.evictions, stats.max_size) == (3, 1, 3)


def test_invalidating_a_prefix_removes_only_the_matching_keys(start_cache):
    cache = start_cache()
    for key in ("room:1:members", "room:1:topic", "room:10:topic", "user:1"):
        put(cache, key, "v")

    removed = cache.ask(CacheInvalidatePrefix("room:1:"), timeout=2)

    assert removed == 2
    assert get(cache, "room:1:topic") is None
    assert get(cache, "room:10:topic") == "v"
    assert get(cache, "user:1") == "v"


def test_delete_reports_whether_the_key_was_there(start_cache):
    cache = start_cache()
    put(cache, "k", "v")
    assert cache.ask(CacheDelete("k"), timeout=2) is True
    assert cache.ask(CacheDelete("k"), timeout=2) is False
    assert get(cache, "k") is None


def test_local_invalidations_are_reported_but_ones_from_other_nodes_are_not(start_cache):
    reported: list[tuple[str, str]] = []
    cache = start_cache(on_invalidate=lambda kind, key: reported.append((kind, key)))

    cache.ask(CacheDelete("never-cached-here"), timeout=2)
    cache.ask(CacheInvalidatePrefix("room:"), timeout=2)
    cache.ask(CacheDelete("k", propagate=False), timeout=2)
    cache.ask(CacheInvalidatePrefix("user:", propagate=False), timeout=2)

    assert reported == [("delete", "never-cached-here"), ("prefix", "room:")]


def test_a_failing_on_invalidate_callback_does_not_crash_the_cache(start_cache, caplog):
    def broken(kind: str, key: str) -> None:
        raise ConnectionError("redis is down")

    cache = start_cache(on_invalidate=broken)
    cache.tell(CacheDelete("k"))

    assert get(cache, "k") is None
    assert cache.is_alive()
    assert "on_invalidate callback failed" in caplog.text


def test_bad_puts_are_refused_by_the_message_before_reaching_the_actor():
    with pytest.raises(ValueError, match="None cannot be cached"):
        CachePut("k", None)
    with pytest.raises(ValueError, match="ttl"):
        CachePut("k", "v", ttl=0)


def test_the_cache_works_from_asyncio_through_the_bridge(start_cache):
    cache = start_cache()

    async def main() -> Any:
        await ask(cache, CachePut("k", b"v", ttl=30))
        return await ask(cache, CacheGet("k"))

    assert asyncio.run(main()) == b"v"


def test_a_crashed_cache_is_restarted_empty_by_its_supervisor(supervise, events):
    supervisor = supervise([ChildSpec("cache", CacheActor.start)])
    supervisor.get("cache").ask(CachePut("k", "v"), timeout=2)

    supervisor.get("cache").tell(InjectFault("corrupted"))
    events.wait_for("restart", "cache")

    assert supervisor.get("cache").ask(CacheGet("k"), timeout=2) is None


def test_the_least_recently_used_entries_are_evicted_to_stay_within_the_byte_budget(start_cache):
    cache = start_cache(max_bytes=1000)
    for name in "abc":
        put(cache, name, "x" * 299)  # 300 bytes with its key
    get(cache, "a")  # now b is the least recently used
    put(cache, "d", "x" * 299)

    assert [get(cache, name) is not None for name in "abcd"] == [True, False, True, True]
    stats = cache.ask(CacheStats(), timeout=2)
    assert (stats.bytes, stats.max_bytes, stats.evictions) == (900, 1000, 1)


def test_a_value_larger_than_the_whole_budget_is_not_stored_and_evicts_nothing(start_cache):
    cache = start_cache(max_bytes=1000)
    put(cache, "small", "v")
    assert cache.ask(CachePut("huge", b"x" * 1000), timeout=2) is False

    assert get(cache, "huge") is None
    assert get(cache, "small") == "v"


def test_replacing_or_removing_entries_gives_their_bytes_back(start_cache, clock):
    cache = start_cache(max_bytes=1000)
    put(cache, "k", "x" * 500)
    put(cache, "k", "x" * 100)
    put(cache, "gone", "x" * 100, ttl=1)
    cache.ask(CacheDelete("nothing"), timeout=2)
    clock.advance(2)
    get(cache, "gone")  # expired: removed on read
    put(cache, "p:1", "x")
    cache.ask(CacheInvalidatePrefix("p:"), timeout=2)

    assert cache.ask(CacheStats(), timeout=2).bytes == 101
