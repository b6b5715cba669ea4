"""The last hour of every node's numbers, one point a second, kept on every node.

Each node hears every node's samples (:mod:`.stats`), so any of them can draw the whole
cluster's charts after a reload, including the minutes before a node was lost. A series
is a ring of ``array('d')`` per metric: about 30 KB per metric and node for an hour.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping
from typing import Any

#: What is kept for each node, in this order; how a coarser step combines its points.
METRICS: dict[str, str] = {
    "connections": "mean",
    "in_per_s": "mean",
    "out_per_s": "mean",
    "p50_ms": "mean",
    "p99_ms": "max",
    "rate_limited_per_s": "mean",
    "slow_per_s": "mean",
    "restarts": "sum",  # actor restarts in that second
    "mailbox": "max",  # the deepest actor mailbox
    "cpu_percent": "mean",
    "memory_mb": "mean",
}
HOUR = 3600


class Series:
    """One node's points: a timestamp and one value per metric, ``capacity`` at most."""

    def __init__(self, capacity: int = HOUR) -> None:
        self.capacity = capacity
        self.times = array("d", bytes(8 * capacity))
        self.values = {name: array("d", bytes(8 * capacity)) for name in METRICS}
        self.start = 0
        self.length = 0

    def add(self, t: float, point: Mapping[str, float]) -> None:
        if self.length and t <= self.last_time:
            return  # the same sample heard twice, or the clock went back
        index = (self.start + self.length) % self.capacity
        self.times[index] = t
        for name, values in self.values.items():
            value = point.get(name, 0.0)
            values[index] = float(value) if isinstance(value, (int, float)) else 0.0
        if self.length < self.capacity:
            self.length += 1
        else:
            self.start = (self.start + 1) % self.capacity

    @property
    def last_time(self) -> float:
        if not self.length:
            return 0.0
        return self.times[(self.start + self.length - 1) % self.capacity]

    def indexes(self, since: float) -> Iterable[int]:
        for offset in range(self.length):
            index = (self.start + offset) % self.capacity
            if self.times[index] >= since:
                yield index

    def window(self, since: float, step: int) -> dict[str, list[float]]:
        """Points from ``since`` on, one per ``step`` seconds (combined per :data:`METRICS`),
        as ``{"t": [...], metric: [...]}``."""
        out: dict[str, list[float]] = {"t": [], **{name: [] for name in METRICS}}
        bucket: list[int] = []
        current = None
        for index in self.indexes(since):
            key = math.floor(self.times[index] / step)
            if current is not None and key != current:
                self._flush(out, bucket, current * step)
                bucket = []
            current = key
            bucket.append(index)
        if bucket and current is not None:
            self._flush(out, bucket, current * step)
        return out

    def _flush(self, out: dict[str, list[float]], bucket: list[int], t: float) -> None:
        out["t"].append(t if len(bucket) > 1 else self.times[bucket[0]])
        for name, how in METRICS.items():
            values = [self.values[name][i] for i in bucket]
            if how == "max":
                combined = max(values)
            elif how == "sum":
                combined = sum(values)
            else:
                combined = sum(values) / len(values)
            out[name].append(round(combined, 3))


class Timeline:
    """A :class:`Series` per node name."""

    def __init__(self, capacity: int = HOUR) -> None:
        self.capacity = capacity
        self.series: dict[str, Series] = {}

    def add(self, name: str, t: float, point: Mapping[str, float]) -> None:
        series = self.series.get(name)
        if series is None:
            series = self.series[name] = Series(self.capacity)
        series.add(t, point)

    def forget(self, name: str) -> None:
        self.series.pop(name, None)

    def forget_older_than(self, since: float) -> None:
        """Drop nodes with no point since ``since`` (gone for longer than the window)."""
        for name in [n for n, s in self.series.items() if s.last_time < since]:
            del self.series[name]

    def window(self, since: float, step: int) -> dict[str, Any]:
        return {name: series.window(since, step) for name, series in sorted(self.series.items())}
