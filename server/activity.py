"""What the broadcasts on this node did since the last look: how many per topic, and how long
each fan-out took, for the console's topic rates and latency charts.

It is the pub/sub core's observer, called once per local fan-out (never per delivery), so
it costs two dictionary bumps and a list append per broadcast; :mod:`.stats` takes the
numbers once a second. ``forward`` passes every observation on (to ``/metrics``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Fan-out durations kept per interval; past this the oldest are overwritten in turn.
KEEP = 4096


@dataclass(frozen=True, slots=True)
class Interval:
    """What happened between two :meth:`Activity.take` calls."""

    broadcasts: dict[str, int]  # topic -> broadcasts fanned out here
    deliveries: dict[str, int]  # topic -> frames handed to local subscribers
    fanouts: int
    p50_ms: float
    p99_ms: float


class Activity:
    def __init__(self) -> None:
        self.forward: Callable[[str, str, int, float], None] | None = None
        self._broadcasts: dict[str, int] = {}
        self._deliveries: dict[str, int] = {}
        self._durations: list[float] = []
        self._fanouts = 0

    def observe(self, topic: str, event: str, subscribers: int, seconds: float) -> None:
        broadcasts = self._broadcasts
        broadcasts[topic] = broadcasts.get(topic, 0) + 1
        deliveries = self._deliveries
        deliveries[topic] = deliveries.get(topic, 0) + subscribers
        if self._fanouts < KEEP:
            self._durations.append(seconds)
        else:
            self._durations[self._fanouts % KEEP] = seconds
        self._fanouts += 1
        if self.forward is not None:
            self.forward(topic, event, subscribers, seconds)

    def take(self) -> Interval:
        """The numbers since the last call, and start over."""
        durations = sorted(self._durations)
        interval = Interval(
            self._broadcasts,
            self._deliveries,
            self._fanouts,
            _quantile(durations, 0.50) * 1000,
            _quantile(durations, 0.99) * 1000,
        )
        self._broadcasts, self._deliveries, self._durations, self._fanouts = {}, {}, [], 0
        return interval


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
