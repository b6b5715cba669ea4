"""Prometheus metrics at ``/metrics``.

Hot paths only bump plain integers (a prometheus Counter takes a lock per ``inc``); a
collector turns them into metrics when Prometheus scrapes. Fan-out latency is a histogram
fed once per broadcast, never per delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder
from prometheus_client.process_collector import ProcessCollector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from switchboard.server import telemetry
from switchboard.server.security import bearer_matches

if TYPE_CHECKING:
    from switchboard.server.guard import ConnectionGuard
    from switchboard.server.node import Node

__all__ = ["CONTENT_TYPE_LATEST", "NodeMetrics"]

logger = logging.getLogger("switchboard.metrics")

FANOUT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class _NodeCollector:
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        e = self.node
        node = e.id
        yield _gauge("switchboard_connections", "Open sockets on this node.", node, len(e.sockets))
        yield _gauge(
            "switchboard_joined_channels",
            "Joined channels on this node.",
            node,
            e.counters.joined_channels,
        )
        yield _counter(
            "switchboard_messages_in", "Frames received from clients.", node, e.counters.messages_in
        )
        out = e.counters.frames_out + e.pubsub.deliveries
        yield _counter(
            "switchboard_messages_out",
            "Frames queued to clients (replies, pushes, broadcasts).",
            node,
            out,
        )
        yield _counter(
            "switchboard_broadcasts",
            "Broadcasts published from this node.",
            node,
            e.pubsub.broadcasts,
        )
        yield _counter(
            "switchboard_slow_consumers",
            "Sockets dropped for not reading.",
            node,
            e.counters.slow_consumers,
        )
        limited = CounterMetricFamily(
            "switchboard_rate_limited", "Requests refused by a rate limit.", labels=["node", "kind"]
        )
        for kind, count in sorted(e.counters.rate_limited.items()):
            limited.add_metric([node, kind], count)
        yield limited
        status = e.pubsub.status
        connected = GaugeMetricFamily(
            "switchboard_pubsub_connected",
            "1 if the pub/sub backend is reachable.",
            labels=["node", "backend"],
        )
        connected.add_metric([node, e.pubsub.backend_name], 1.0 if status.connected else 0.0)
        yield connected
        if e.actors is not None:
            restarts = CounterMetricFamily(
                "switchboard_actor_restarts",
                "Actor restarts by the supervisor.",
                labels=["node", "actor"],
            )
            depth = GaugeMetricFamily(
                "switchboard_actor_mailbox_depth",
                "Messages waiting in an actor's mailbox.",
                labels=["node", "actor"],
            )
            for name, count in e.actors.supervisor.restart_counts().items():
                restarts.add_metric([node, name], count)
                depth.add_metric([node, name], e.actors.mailbox_depth(name))
            yield restarts
            yield depth
            yield _gauge(
                "switchboard_actors_healthy",
                "1 while the supervision tree runs.",
                node,
                int(e.actors.healthy),
            )


def _gauge(name: str, doc: str, node: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["node"])
    family.add_metric([node], value)
    return family


def _counter(name: str, doc: str, node: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["node"])
    family.add_metric([node], value)
    return family


class _GuardCollector:
    def __init__(self, guard: ConnectionGuard, node: str) -> None:
        self.guard = guard
        self.node = node

    def collect(self) -> Iterator[Metric]:
        guard, node = self.guard, self.node
        yield _gauge(
            "switchboard_tcp_connections",
            "Open TCP connections (HTTP and WebSocket, any stage).",
            node,
            guard.open_connections,
        )
        yield _gauge(
            "switchboard_tcp_connection_limit",
            "Open TCP connections allowed in all (SWITCHBOARD_MAX_CONNECTIONS).",
            node,
            guard.max_connections,
        )
        refused = CounterMetricFamily(
            "switchboard_connections_refused",
            "Connections refused or closed by a guard, by reason.",
            labels=["node", "reason"],
        )
        for reason, count in sorted(guard.refused.items()):
            refused.add_metric([node, reason], count)
        yield refused
        yield _counter(
            "switchboard_accept_errors",
            "accept() calls that failed for want of descriptors or memory.",
            node,
            guard.accept_errors,
        )


class NodeMetrics:
    def __init__(self, node: Node) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes and friends
        self.registry.register(_NodeCollector(node))  # type: ignore[arg-type]
        self.fanout = Histogram(
            "switchboard_broadcast_fanout_seconds",
            "Time to hand one broadcast to every local subscriber.",
            registry=self.registry,
            buckets=FANOUT_BUCKETS,
        )
        node.activity.forward = self.observe_fanout
        self.node_id = node.id
        self.token = node.settings.metrics_token
        #: (host, port) of the listener /metrics is served on, if not the main one.
        self.listener: tuple[str, int] | None = None
        if node.settings.profile == "prod" and not (self.token or node.settings.metrics_address):
            logger.warning(
                "/metrics is open to anyone who reaches this node: set SWITCHBOARD_METRICS_TOKEN "
                "or SWITCHBOARD_METRICS_ADDRESS, or keep it from outside in your proxy"
            )

    def watch(self, guard: ConnectionGuard) -> None:
        """Report ``guard``'s connection counts too (the node runs under uvicorn)."""
        self.registry.register(_GuardCollector(guard, self.node_id))  # type: ignore[arg-type]

    def observe_fanout(self, topic: str, event: str, subscribers: int, seconds: float) -> None:
        self.fanout.observe(seconds)
        if telemetry.attached(telemetry.BROADCAST):
            telemetry.execute(
                telemetry.BROADCAST,
                {"duration": seconds, "subscribers": subscribers},
                {"topic": topic, "event": event},
            )

    async def endpoint(self, request: Request) -> Response:
        """The exposition format the scraper asks for (plain 0.0.4 text by default).

        Security note: the numbers tell how busy the node is and which actors fail; keep them
        from the public with ``SWITCHBOARD_METRICS_TOKEN`` (a bearer token) or
        ``SWITCHBOARD_METRICS_ADDRESS`` (a listener of its own, on a private address)."""
        if self.listener is not None and not _arrived_on(request, self.listener):
            return JSONResponse({"error": "not found"}, status_code=404)
        if self.token and not bearer_matches(request, self.token):
            return JSONResponse(
                {"error": "missing or wrong bearer token for /metrics"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(self.registry), headers={"Content-Type": content_type})


def _arrived_on(request: Request, listener: tuple[str, int]) -> bool:
    """Whether ``request`` came through the socket listening on ``listener``."""
    server = request.scope.get("server")
    if not server or server[1] != listener[1]:
        return False
    return listener[0] in ("0.0.0.0", "::") or server[0] == listener[0]
