"""The node's running totals, for metrics and the dashboard.

Plain integers bumped on the hot paths (a prometheus Counter takes a lock per ``inc``);
:mod:`switchboard.server.metrics` and :mod:`switchboard.server.stats` read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from switchboard.server import telemetry


@dataclass(slots=True)
class Counters:
    joined_channels: int = 0
    slow_consumers: int = 0
    messages_in: int = 0
    frames_out: int = 0
    #: Refusals by a rate limit, per kind (connect, join, push, http).
    rate_limited: dict[str, int] = field(default_factory=dict)

    def count_rate_limited(self, kind: str, key: str | None) -> None:
        self.rate_limited[kind] = self.rate_limited.get(kind, 0) + 1
        telemetry.execute(telemetry.RATE_LIMITED, {"count": 1}, {"kind": kind, "key": key})
