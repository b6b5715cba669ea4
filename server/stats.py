"""Live numbers for the dashboard: each node samples itself every second, shares the
sample with the other nodes over pub/sub, and pushes the cluster view to the dashboard
channels connected to it. A node that stops reporting drops out of the view.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import orjson

from switchboard.actors.bridge import tell
from switchboard.actors.cache import CachePut
from switchboard.actors.errors import ActorError
from switchboard.channels.dashboard import STATS_VIEW_KEY
from switchboard.server.codec import Frame
from switchboard.server.tasks import stop_tasks

if TYPE_CHECKING:
    from switchboard.server.node import Node

logger = logging.getLogger("switchboard.stats")

STATS_TOPIC = "switchboard:stats"
DASHBOARD_TOPIC = "admin:dashboard"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_memory() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ClusterStats:
    def __init__(self, node: Node, interval: float = 1.0, expire_after: float = 5.0) -> None:
        self.node = node
        self.interval = interval
        self.expire_after = expire_after
        self.nodes: dict[str, tuple[float, dict[str, Any]]] = {}
        self._last: tuple[float, int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.node.pubsub.subscribe(STATS_TOPIC, self)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self.node.pubsub.unsubscribe(STATS_TOPIC, self)
        if self._task is not None:
            await stop_tasks([self._task])

    def deliver(self, event: str, frame: Frame) -> None:
        """A sample from another node."""
        try:
            sample = orjson.loads(frame)
            self.nodes[str(sample["node"])] = (time.monotonic(), sample)
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring a malformed stats sample")

    async def _run(self) -> None:
        while True:
            try:
                sample = await self.sample()
                self.nodes[self.node.id] = (time.monotonic(), sample)
                self.node.pubsub.broadcast_remote(
                    STATS_TOPIC, "sample", orjson.dumps(sample).decode()
                )
                deadline = time.monotonic() - self.expire_after
                for name in [n for n, (heard, _) in self.nodes.items() if heard < deadline]:
                    del self.nodes[name]
                view = self.view()
                if self.node.actors is not None:  # the dashboard's join reply reads it there
                    tell(self.node.actors.cache, CachePut(STATS_VIEW_KEY, view))
                if self.node.pubsub.subscriber_count(DASHBOARD_TOPIC):
                    self.node.pubsub.local_broadcast(
                        DASHBOARD_TOPIC,
                        "stats",
                        orjson.dumps([None, None, DASHBOARD_TOPIC, "stats", view]).decode(),
                    )
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("stats sampling failed")
            await asyncio.sleep(self.interval)

    async def sample(self) -> dict[str, Any]:
        e = self.node
        now = time.monotonic()
        messages_in = e.counters.messages_in
        messages_out = e.counters.frames_out + e.pubsub.deliveries
        in_rate = out_rate = 0.0
        if self._last is not None:
            elapsed = max(1e-6, now - self._last[0])
            in_rate = (messages_in - self._last[1]) / elapsed
            out_rate = (messages_out - self._last[2]) / elapsed
        self._last = (now, messages_in, messages_out)
        presence_counts: dict[str, int] = {}
        if e.presence is not None:
            try:
                presence_counts = (await e.presence.summary())["topics"]
            except ActorError:
                pass
        subscribers = e.pubsub.topics()
        busiest = sorted(
            (
                t
                for t in subscribers
                if not t.startswith(("switchboard:", "users_socket:", "admin:"))
            ),
            key=lambda t: -subscribers[t],
        )[:10]
        status = e.pubsub.status
        actors: dict[str, Any] = {"healthy": True, "restarts": {}, "mailbox": {}}
        if e.actors is not None:
            actors = {
                "healthy": e.actors.healthy,
                "gave_up": e.actors.supervisor.gave_up_reason,
                "restarts": e.actors.supervisor.restart_counts(),
                "mailbox": {
                    name: e.actors.mailbox_depth(name) for name in ("cache", "limiter", "presence")
                },
            }
        return {
            "node": e.id,
            "ts": time.time(),
            "accepting": e.accepting,
            "connections": len(e.sockets),
            "joined_channels": e.counters.joined_channels,
            "messages_in": messages_in,
            "messages_out": messages_out,
            "in_per_s": round(in_rate, 1),
            "out_per_s": round(out_rate, 1),
            "memory_bytes": resident_memory(),
            "actors": actors,
            "pubsub": {
                "backend": e.pubsub.backend_name,
                "connected": status.connected,
                "reason": status.reason,
            },
            "topics": [
                {"topic": t, "subscribers": subscribers[t], "presences": presence_counts.get(t, 0)}
                for t in busiest
            ],
        }

    def view(self) -> dict[str, Any]:
        """Every live node's latest sample, and the busiest topics over the cluster."""
        samples = [
            sample for _, sample in sorted(self.nodes.values(), key=lambda item: item[1]["node"])
        ]
        topics: dict[str, dict[str, Any]] = {}
        for sample in samples:
            for entry in sample.get("topics", ()):
                merged = topics.setdefault(
                    entry["topic"], {"topic": entry["topic"], "subscribers": 0, "presences": 0}
                )
                merged["subscribers"] += entry["subscribers"]
                merged["presences"] = max(merged["presences"], entry["presences"])
        busiest = sorted(topics.values(), key=lambda t: -t["subscribers"])[:10]
        return {"ts": time.time(), "nodes": samples, "topics": busiest}
