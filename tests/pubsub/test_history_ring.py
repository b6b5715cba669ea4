"""The in-memory history (one ring per topic) and positions, as pure data with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.server.pubsub.history import HistoryLimits, MemoryHistory, Position


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def history(
    size: int = 5, ttl: float = 60.0, max_bytes: int = 10_000
) -> tuple[MemoryHistory, Clock]:
    clock = Clock()
    return MemoryHistory(HistoryLimits(size, ttl, max_bytes), clock), clock


def frame(n: int, pad: int = 0) -> str:
    return f'[null,null,"room:a","n",{{"n":{n},"p":"{"x" * pad}"}}]'


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=20),
    st.integers(0, 2**53),
)
def test_a_position_reads_back_as_written(epoch: str, offset: int) -> None:
    position = Position("e" + epoch, offset)
    assert Position.parse(str(position)) == position


@pytest.mark.parametrize(
    "text",
    [None, 3, "", "3", "e", "e.", ".3", "3.3", "e.-1", "e.1e3", "é.1", "e f.1", "e.٣", "x" * 70],
)
def test_anything_else_is_not_a_position(text: object) -> None:
    assert Position.parse(text) is None


def test_positions_grow_by_one_per_broadcast_from_one_in_a_topic_of_its_own() -> None:
    store, _ = history()
    a = [store.append("room:a", "n", frame(n)) for n in range(3)]
    b = store.append("room:b", "n", frame(0))
    assert [p.offset for p in a] == [1, 2, 3] and len({p.epoch for p in a}) == 1
    assert b.offset == 1 and b.epoch != a[0].epoch


def test_a_ring_keeps_the_latest_size_broadcasts() -> None:
    store, _ = history(size=3)
    positions = [store.append("room:a", "n", frame(n)) for n in range(10)]
    read = store.read("room:a", positions[6])
    assert read.entries == [(offset, "n", frame(offset - 1)) for offset in (8, 9, 10)]
    assert store.read("room:a", positions[5]).entries is None  # 7 is gone


def test_a_ring_drops_broadcasts_older_than_the_ttl() -> None:
    store, clock = history(ttl=60)
    old = store.append("room:a", "n", frame(1))
    clock.now += 30
    store.append("room:a", "n", frame(2))
    clock.now += 31
    assert store.read("room:a", Position(old.epoch, 0)).entries is None
    assert store.read("room:a", old).entries == [(2, "n", frame(2))]


def test_a_ring_keeps_at_most_max_bytes_of_frames() -> None:
    store, _ = history(size=100, max_bytes=1000)
    positions = [store.append("room:a", "n", frame(n, pad=300)) for n in range(5)]
    assert 300 < len(frame(0, pad=300)) < 1000 / 2  # two fit, three do not
    kept = store.read("room:a", positions[2]).entries
    assert kept is not None and [offset for offset, _, _ in kept] == [4, 5]
    assert store.read("room:a", positions[1]).entries is None


def test_a_read_up_to_an_offset_stops_there() -> None:
    store, _ = history()
    positions = [store.append("room:a", "n", frame(n)) for n in range(5)]
    read = store.read("room:a", positions[0], upto=3)
    assert read.top == positions[-1]
    assert [offset for offset, _, _ in read.entries or []] == [2, 3]


def test_a_quiet_topic_nobody_subscribes_to_is_freed_and_starts_a_new_epoch() -> None:
    store, clock = history(ttl=60)
    first = store.append("room:quiet", "n", frame(1))
    store.append("room:busy", "n", frame(1))
    clock.now += 61
    assert store.sweep(subscribed=lambda topic: topic == "room:busy") == 1
    assert len(store) == 1
    again = store.read("room:quiet", first)
    assert again.top.epoch != first.epoch and again.top.offset == 0
    assert again.entries is None


def test_a_subscribed_topic_keeps_its_epoch_while_quiet() -> None:
    store, clock = history(ttl=60)
    first = store.append("room:a", "n", frame(1))
    clock.now += 600
    assert store.sweep(subscribed=lambda topic: True) == 0
    read = store.read("room:a", first)
    assert read.top == first and read.entries == []


def test_limits_must_be_positive() -> None:
    for bad in ({"size": 0}, {"ttl": 0}, {"max_bytes": 0}):
        with pytest.raises(ValueError):
            HistoryLimits(**bad)  # type: ignore[arg-type]
