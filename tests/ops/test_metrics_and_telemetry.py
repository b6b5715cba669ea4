"""``/metrics`` of a real node, and telemetry events in-process."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchboard.client import Client
from switchboard.server import telemetry
from switchboard.server.config import Settings
from switchboard.server.metrics import NodeMetrics
from switchboard.server.node import Node
from switchboard.server.pubsub import PubSub
from switchboard.server.pubsub.memory import MemoryBackend
from tests.ops.helpers import http, node, unique, wait_until
from tests.support.processes import ServerProcess

Samples = dict[str, list[tuple[dict[str, str], float]]]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    # One API call per 10 s: the second is refused, so rate_limited has something to count.
    with node({"SWITCHBOARD_HTTP_RATE": "1,0.1"}) as running:
        yield running


def _scrape(server: ServerProcess) -> Samples:
    response = http("GET", f"{server.url}/metrics")
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    matching = [value for found, value in samples.get(name, []) if labels.items() <= found.items()]
    assert len(matching) == 1, f"{name}{labels}: {samples.get(name)}"
    return matching[0]


# -- /metrics ------------------------------------------------------------------------------------


def test_metrics_is_served_as_prometheus_text_version_0_0_4(server: ServerProcess) -> None:
    response = http("GET", f"{server.url}/metrics")
    assert response.status_code == 200
    content_type = response.headers["content-type"].replace(" ", "")
    assert content_type.startswith("text/plain;version=0.0.4"), content_type


def test_metrics_exposes_every_switchboard_family_and_the_process_memory(
    server: ServerProcess,
) -> None:
    presence = f"{server.url}/api/presence/room:x"
    assert http("GET", presence).status_code != 429
    assert http("GET", presence).status_code == 429  # provoke one rate limit

    samples = _scrape(server)
    node_name = server.node
    for name in (
        "switchboard_connections",
        "switchboard_joined_channels",
        "switchboard_messages_in_total",
        "switchboard_messages_out_total",
    ):
        assert _value(samples, name, node=node_name) >= 0
    buckets = samples["switchboard_broadcast_fanout_seconds_bucket"]
    assert any(labels.get("le") == "+Inf" for labels, _ in buckets), buckets
    assert "switchboard_broadcast_fanout_seconds_count" in samples
    assert _value(samples, "switchboard_rate_limited_total", node=node_name, kind="http") >= 1
    for actor in ("cache", "limiter", "presence"):
        labels = {"node": node_name, "actor": actor}
        assert _value(samples, "switchboard_actor_restarts_total", **labels) == 0
        assert _value(samples, "switchboard_actor_mailbox_depth", **labels) >= 0
    assert _value(samples, "switchboard_pubsub_connected", node=node_name, backend="memory") == 1
    assert _value(samples, "process_resident_memory_bytes") > 1_000_000


def test_metrics_follow_clients_connecting_joining_and_shouting() -> None:
    # A fresh node, so that nothing else connects meanwhile.
    with node({"SWITCHBOARD_PRESENCE": "off"}) as server:
        before = _scrape(server)
        assert _value(before, "switchboard_connections") == 0
        assert _value(before, "switchboard_joined_channels") == 0
        fanouts = _value(before, "switchboard_broadcast_fanout_seconds_count")

        topic = unique("room:metrics")
        with ExitStack() as stack:
            alice = stack.enter_context(Client.connect(server.socket_url(unique("alice"))))
            bob = stack.enter_context(Client.connect(server.socket_url(unique("bob"))))
            alice.joined(topic)
            bob.joined(topic)  # both sockets are open once their joins are answered
            joined = _scrape(server)
            assert _value(joined, "switchboard_connections") == 2
            assert _value(joined, "switchboard_joined_channels") == 2
            messages_in = _value(joined, "switchboard_messages_in_total")
            messages_out = _value(joined, "switchboard_messages_out_total")
            assert messages_in >= 2 and messages_out >= 2

            alice.push(topic, "shout", {"text": "hi"})
            for client in (alice, bob):
                client.event(topic, "shout")
            shouted = _scrape(server)
            assert _value(shouted, "switchboard_messages_in_total") > messages_in
            assert _value(shouted, "switchboard_messages_out_total") >= messages_out + 2
            assert _value(shouted, "switchboard_broadcast_fanout_seconds_count") > fanouts

        wait_until(
            "connections back to 0",
            lambda: _value(_scrape(server), "switchboard_connections") == 0,
        )
        assert _value(_scrape(server), "switchboard_joined_channels") == 0


# -- telemetry (in-process) ----------------------------------------------------------------------

EVENT = ("switchboard", "ops", "test")
Call = tuple[tuple[str, ...], Mapping[str, float], Mapping[str, Any]]


@pytest.fixture
def handler_ids() -> Iterator[list[str]]:
    """Handler ids a test attached; detached afterwards whatever happened."""
    ids: list[str] = []
    yield ids
    for handler_id in ids:
        telemetry.detach(handler_id)


def _recorder(calls: list[Call]) -> telemetry.Handler:
    return lambda event, measurements, metadata: calls.append((event, measurements, metadata))


def test_an_attached_handler_gets_every_execute_until_it_is_detached(
    handler_ids: list[str],
) -> None:
    calls: list[Call] = []
    handler_id = unique("ops-recorder")
    assert not telemetry.attached(EVENT)
    telemetry.execute(EVENT, {"count": 1}, {})  # nothing attached: nothing happens

    telemetry.attach(handler_id, EVENT, _recorder(calls))
    handler_ids.append(handler_id)
    assert telemetry.attached(EVENT)
    telemetry.execute(EVENT, {"duration": 0.5}, {"topic": "room:x"})
    telemetry.execute(("switchboard", "ops", "other"), {"count": 1}, {})
    assert calls == [(EVENT, {"duration": 0.5}, {"topic": "room:x"})]

    assert telemetry.detach(handler_id) is True
    assert not telemetry.attached(EVENT)
    telemetry.execute(EVENT, {"duration": 1.0}, {})
    assert len(calls) == 1
    assert telemetry.detach(handler_id) is False


def test_a_raising_handler_is_detached_and_logged_and_the_others_still_run(
    handler_ids: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Call] = []
    bad, good = unique("ops-raiser"), unique("ops-good")

    def raising(*_: Any) -> None:
        raise RuntimeError("handler blew up")

    telemetry.attach(bad, EVENT, raising)
    telemetry.attach(good, EVENT, _recorder(calls))
    handler_ids.extend([bad, good])
    with caplog.at_level(logging.ERROR, logger="switchboard.telemetry"):
        telemetry.execute(EVENT, {"count": 1}, {})
    assert len(calls) == 1, "the handler after the raising one still ran"
    [record] = [r for r in caplog.records if r.name == "switchboard.telemetry"]
    assert bad in record.getMessage()
    assert record.exc_info is not None and "handler blew up" in str(record.exc_info[1])

    assert telemetry.detach(bad) is False, "already detached"
    telemetry.execute(EVENT, {"count": 1}, {})
    assert len(calls) == 2
    assert telemetry.attached(EVENT)


def test_attaching_a_handler_id_twice_is_a_value_error(handler_ids: list[str]) -> None:
    handler_id = unique("ops-twice")
    telemetry.attach(handler_id, EVENT, _recorder([]))
    handler_ids.append(handler_id)
    with pytest.raises(ValueError, match=handler_id):
        telemetry.attach(handler_id, EVENT, _recorder([]))
    with pytest.raises(ValueError, match=handler_id):
        telemetry.attach(handler_id, ("switchboard", "ops", "elsewhere"), _recorder([]))


class _Subscriber:
    def __init__(self) -> None:
        self.frames: list[tuple[str, Any]] = []

    def deliver(self, event: str, frame: Any) -> None:
        self.frames.append((event, frame))


def test_a_broadcast_emits_the_broadcast_event_with_the_subscriber_count(
    handler_ids: list[str],
) -> None:
    # The node's own wiring: NodeMetrics observes the node's pub/sub fan-out.
    pubsub = PubSub(MemoryBackend(), "ops-node")
    settings = Settings.from_env({"SWITCHBOARD_PROFILE": "test"})
    metrics = NodeMetrics(Node(settings, pubsub, "ops-node"))
    first, second, elsewhere = _Subscriber(), _Subscriber(), _Subscriber()
    pubsub.subscribe("room:t", first)
    pubsub.subscribe("room:t", second)
    pubsub.subscribe("room:other", elsewhere)

    def fanouts() -> float:
        value = metrics.registry.get_sample_value("switchboard_broadcast_fanout_seconds_count")
        return float(value or 0)

    pubsub.broadcast("room:t", "unobserved", {})  # nothing attached: still measured
    assert fanouts() == 1

    calls: list[Call] = []
    handler_id = unique("ops-broadcasts")
    telemetry.attach(handler_id, telemetry.BROADCAST, _recorder(calls))
    handler_ids.append(handler_id)
    pubsub.broadcast("room:t", "news", {"n": 1})
    pubsub.broadcast("room:t", "news", {"n": 2}, exclude=first)
    pubsub.broadcast("room:nobody", "news", {"n": 3})  # no local subscriber: no fan-out

    assert [(c[0], c[1]["subscribers"], dict(c[2])) for c in calls] == [
        (telemetry.BROADCAST, 2, {"topic": "room:t", "event": "news"}),
        (telemetry.BROADCAST, 1, {"topic": "room:t", "event": "news"}),
    ]
    assert all(c[1]["duration"] >= 0 for c in calls)
    assert len(first.frames) == 2 and len(second.frames) == 3 and elsewhere.frames == []
    assert fanouts() == 3
