"""The console's pure parts, data in and data out: the hour of points (timeline), alerts with
their start times, and the per-broadcast activity numbers."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.server.activity import Activity
from switchboard.server.alerts import Alerts
from switchboard.server.timeline import METRICS, Series, Timeline


def test_a_series_keeps_the_newest_points_and_ignores_a_repeat() -> None:
    series = Series(capacity=3)
    for t in (10.0, 11.0, 11.0, 12.0, 13.0):
        series.add(t, {"connections": t})
    window = series.window(0, 1)
    assert window["t"] == [11.0, 12.0, 13.0]
    assert window["connections"] == [11.0, 12.0, 13.0]


def test_a_coarser_step_combines_points_by_mean_max_or_sum() -> None:
    series = Series()
    points = [(100.0, 1, 5.0, 1), (101.0, 3, 1.0, 0), (102.0, 5, 2.0, 2), (110.0, 7, 0.0, 0)]
    for t, connections, p99, restarts in points:
        series.add(t, {"connections": connections, "p99_ms": p99, "restarts": restarts})
    window = series.window(0, 10)
    assert window["t"] == [100.0, 110.0]
    assert window["connections"] == [3.0, 7.0]  # mean
    assert window["p99_ms"] == [5.0, 0.0]  # max
    assert window["restarts"] == [3.0, 0.0]  # sum
    assert set(window) == {"t", *METRICS}
    assert series.window(105, 1)["t"] == [110.0]


def test_a_timeline_forgets_nodes_silent_for_longer_than_it_keeps() -> None:
    timeline = Timeline(capacity=10)
    timeline.add("node1", 100.0, {})
    timeline.add("node2", 200.0, {})
    timeline.forget_older_than(150.0)
    assert list(timeline.window(0, 1)) == ["node2"]


def _sample(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "pubsub": {"connected": True, "backend": "redis"}, **fields}


def test_an_alert_lasts_while_its_condition_does_and_keeps_its_start() -> None:
    alerts, events = Alerts(), []

    def record(kind: str, node: str | None, message: str) -> None:
        events.append((kind, message))

    down = _sample("node1", pubsub={"connected": False, "backend": "redis", "reason": "refused"})
    first = alerts.update([down], [], record)
    assert [a["kind"] for a in first] == ["pubsub_down"]
    assert "node1: pub/sub (redis) is down: refused" in first[0]["message"]
    again = alerts.update([down], [], record)
    assert again[0]["since"] == first[0]["since"], "started when first seen"
    assert alerts.update([_sample("node1")], [], record) == []
    assert [kind for kind, _ in events] == ["alert", "resolved"]


def test_lost_draining_and_restart_loop_alerts_say_what_and_since_when() -> None:
    lost = {"name": "node2", "last_seen": 1000.0, "held": {"connections": 1, "topics": 3}}
    samples = [
        _sample("node1", draining={"since": 1010.0, "sockets_left": 4}),
        _sample("node3", actors={"healthy": True, "restarts_last_minute": {"cache": 3}}),
        _sample("node4", actors={"healthy": True, "restarts_last_minute": {"cache": 2}}),
    ]
    active = alerts_of(samples, [lost])
    assert [(a["kind"], a["node"]) for a in active] == [
        ("node_lost", "node2"),
        ("draining", "node1"),
        ("restart_loop", "node3"),
    ]
    assert (
        active[0]["since"] == 1000.0 and "it held 1 connection in 3 topics" in active[0]["message"]
    )
    assert active[1]["since"] == 1010.0 and "4 sockets left" in active[1]["message"]
    assert "cache actor restarted 3 times" in active[2]["message"]


def alerts_of(samples: list[dict[str, Any]], lost: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return Alerts().update(samples, lost, lambda *_: None)


def test_activity_counts_broadcasts_per_topic_and_fanout_quantiles_then_starts_over() -> None:
    forwarded = []
    activity = Activity()
    activity.forward = lambda *args: forwarded.append(args)
    for i in range(100):
        activity.observe("room:a" if i % 4 else "room:b", "shout", 10, (i + 1) / 1000)
    interval = activity.take()
    assert interval.broadcasts == {"room:a": 75, "room:b": 25}
    assert interval.deliveries == {"room:a": 750, "room:b": 250}
    assert interval.fanouts == 100 and len(forwarded) == 100
    assert interval.p50_ms == pytest.approx(51.0) and interval.p99_ms == pytest.approx(100.0)
    empty = activity.take()
    assert empty.broadcasts == {} and empty.fanouts == 0 and empty.p99_ms == 0.0
