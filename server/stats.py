"""The cluster's numbers for the console: each node samples itself every second, shares the
sample with the other nodes over pub/sub, and pushes the cluster view to the console's
``admin:dashboard`` channels connected to it.

Every node keeps the whole view, so any of them can answer for the cluster:

- each live node's latest sample; a draining node says so in it, until it is gone;
- lost nodes: silent for ``expire_after`` seconds, they stay in the view as lost (when last
  heard, what they held) until they return (a sample from a node of the same name) or an
  operator dismisses them (:meth:`ClusterStats.dismiss`, on every node); a node that stops
  on purpose says goodbye and leaves the view without being lost;
- alerts (:mod:`.alerts`) with when each started, and the recent events;
- an hour of every node's points (:mod:`.timeline`), so charts survive a reload.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from importlib import metadata
from typing import TYPE_CHECKING, Any

import orjson

from switchboard.actors.bridge import tell
from switchboard.actors.cache import CachePut
from switchboard.actors.errors import ActorError
from switchboard.channels.dashboard import STATS_VIEW_KEY
from switchboard.presence.tracker import CONNECTIONS_TOPIC, node_name
from switchboard.server.alerts import Alerts
from switchboard.server.codec import Frame
from switchboard.server.tasks import stop_tasks
from switchboard.server.timeline import HOUR, Timeline

if TYPE_CHECKING:
    from switchboard.actors.supervisor import SupervisorEvent
    from switchboard.server.node import Node

logger = logging.getLogger("switchboard.stats")

STATS_TOPIC = "switchboard:stats"
DASHBOARD_TOPIC = "admin:dashboard"
#: Topics of the node's own plumbing, never listed as the app's.
INTERNAL_PREFIXES = ("switchboard:", "users_socket:", "admin:", "admin_socket:")
#: A node lists all its topics in its sample up to this many (else the busiest 10 only).
ALL_TOPICS_UP_TO = 100
RESTART_LOOP_WINDOW = 60.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MB = 1024 * 1024


def resident_memory() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _version() -> str:
    try:
        return metadata.version("switchboard")
    except metadata.PackageNotFoundError:
        return "unknown"


VERSION = _version()


class ClusterStats:
    def __init__(self, node: Node, interval: float = 1.0, expire_after: float = 5.0) -> None:
        self.node = node
        self.interval = interval
        self.expire_after = expire_after
        self.started_at = time.time()
        #: node id -> (monotonic time heard, its latest sample)
        self.nodes: dict[str, tuple[float, dict[str, Any]]] = {}
        #: node name -> what we knew of it when it went silent
        self.lost: dict[str, dict[str, Any]] = {}
        self.timeline = Timeline()
        self.events: deque[dict[str, Any]] = deque(maxlen=50)
        self.alerts = Alerts()
        self.active_alerts: list[dict[str, Any]] = []
        self._last: dict[str, float] | None = None
        self._restarts: deque[tuple[float, str]] = deque()
        self._deaf = False
        self._wake = asyncio.Event()
        #: Topic -> broadcasts per second here over the last interval.
        self.topic_rates: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.node.pubsub.subscribe(STATS_TOPIC, self)
        if self.node.actors is not None:
            self.node.actors.listeners.append(self._actor_event)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop sampling and say goodbye, so other nodes don't take us for lost."""
        if self._task is not None:
            await stop_tasks([self._task])
        goodbye = {"node": self.node.id, "drained": not self.node.accepting}
        self._publish("goodbye", goodbye)
        self.node.pubsub.unsubscribe(STATS_TOPIC, self)

    # -- what other nodes send ----------------------------------------------------------

    def deliver(self, event: str, frame: Frame) -> None:
        try:
            body = orjson.loads(frame)
            if event == "sample":
                self._heard(body)
            elif event == "goodbye":
                self._goodbye(str(body["node"]), bool(body.get("drained")))
            elif event == "dismiss":
                self._dismissed(str(body["name"]), str(body.get("by", "")))
            elif event == "event":
                self.events.append(body)
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring a malformed %s message on %s", event, STATS_TOPIC)

    def _heard(self, sample: dict[str, Any]) -> None:
        node = str(sample["node"])
        name = node_name(node)
        if node not in self.nodes:
            for old in [n for n in self.nodes if n != node and node_name(n) == name]:
                del self.nodes[old]  # restarted before anyone noticed it was gone
                self.record("restarted", name, f"{name} restarted")
            lost = self.lost.pop(name, None)
            if lost is not None:
                away = time.time() - lost["last_seen"]
                how = "came back" if lost["node"] == node else "restarted"
                self.record("returned", name, f"{name} {how} after {away:.0f} s without a word")
            elif self.nodes or node != self.node.id:
                self.record("joined", name, f"{name} joined")
        self.nodes[node] = (time.monotonic(), sample)
        self.timeline.add(name, float(sample["ts"]), _point(sample))

    def _goodbye(self, node: str, drained: bool) -> None:
        if self.nodes.pop(node, None) is not None:
            name = node_name(node)
            self.lost.pop(name, None)
            self.record(
                "left", name, f"{name} left the cluster" + (" after draining" if drained else "")
            )

    def _dismissed(self, name: str, by: str) -> None:
        if self.lost.pop(name, None) is not None:
            self.record(
                "dismissed", name, f"lost node {name} dismissed" + (f" by {by}" if by else "")
            )

    # -- what operators do ----------------------------------------------------------------

    def dismiss(self, name: str, by: str = "") -> bool:
        """Forget lost node ``name`` here and on every other node; False if not lost."""
        if name not in self.lost:
            return False
        self._dismissed(name, by)
        self._publish("dismiss", {"name": name, "by": by})
        self._push_view()
        return True

    def record(self, kind: str, node: str | None, message: str, share: bool = False) -> None:
        """Add to the recent events (on every node if ``share``: what only we saw)."""
        event = {"at": time.time(), "kind": kind, "node": node, "message": message}
        self.events.append(event)
        if share:
            self._publish("event", event)

    # -- every second -----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("stats sampling failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
            self._wake.clear()

    def nudge(self) -> None:
        """Sample now rather than at the next second: something others must see changed."""
        self._wake.set()

    async def tick(self) -> None:
        sample = await self.sample()
        self._heard(sample)
        self._publish("sample", sample)
        self._expire()
        self.node.taps.close_idle()
        samples = [s for _, s in self.nodes.values()]
        self.active_alerts = self.alerts.update(samples, self.lost.values(), self.record)
        self._push_view()

    def _expire(self) -> None:
        now = time.monotonic()
        if not self.node.pubsub.status.connected:
            self._deaf = True  # we can't hear anyone: nobody is lost for that (the view says so)
            return
        if self._deaf:  # hearing again: everyone gets a fresh chance to report
            self._deaf = False
            self.nodes = {node: (now, sample) for node, (_, sample) in self.nodes.items()}
        deadline = now - self.expire_after
        for node, (heard, sample) in list(self.nodes.items()):
            if heard >= deadline or node == self.node.id:
                continue
            del self.nodes[node]
            name = node_name(node)
            self.lost[name] = {
                "node": node,
                "name": name,
                "last_seen": float(sample["ts"]),
                "lost_at": time.time(),
                "held": {
                    "connections": sample.get("connections", 0),
                    "joined_channels": sample.get("joined_channels", 0),
                    "topics": sample.get("topic_count", 0),
                },
                "version": sample.get("version"),
            }
            self.record("lost", name, f"{name} lost: silent for {now - heard:.0f} s")
        self.timeline.forget_older_than(time.time() - HOUR)

    def _push_view(self) -> None:
        view = self.view()
        if self.node.actors is not None:  # the dashboard's join reply reads it there
            tell(self.node.actors.cache, CachePut(STATS_VIEW_KEY, view))
        if self.node.pubsub.subscriber_count(DASHBOARD_TOPIC):
            self.node.pubsub.local_broadcast(
                DASHBOARD_TOPIC,
                "stats",
                orjson.dumps([None, None, DASHBOARD_TOPIC, "stats", view]).decode(),
            )

    def _publish(self, event: str, body: dict[str, Any]) -> None:
        self.node.pubsub.broadcast_remote(STATS_TOPIC, event, orjson.dumps(body).decode())

    def _actor_event(self, event: SupervisorEvent) -> None:
        if event.kind == "restart":
            self._restarts.append((time.monotonic(), event.child))

    async def sample(self) -> dict[str, Any]:
        e = self.node
        now, cpu = time.monotonic(), time.process_time()
        counters = e.counters
        totals = {
            "in": counters.messages_in,
            "out": counters.frames_out + e.pubsub.deliveries,
            "limited": sum(counters.rate_limited.values()),
            "slow": counters.slow_consumers,
            "restarts": e.actors.restarts if e.actors is not None else 0,
        }
        last = self._last
        elapsed = max(1e-6, now - last["at"]) if last is not None else 1.0

        def rate(key: str) -> float:
            return 0.0 if last is None else max(0.0, (totals[key] - last[key]) / elapsed)

        cpu_percent = 0.0 if last is None else 100 * (cpu - last["cpu"]) / elapsed
        self._last = {"at": now, "cpu": cpu, **totals}
        activity = e.activity.take()
        self.topic_rates = {t: round(n / elapsed, 1) for t, n in activity.broadcasts.items()}

        while self._restarts and self._restarts[0][0] < now - RESTART_LOOP_WINDOW:
            self._restarts.popleft()
        recent_restarts: dict[str, int] = {}
        for _, child in self._restarts:
            recent_restarts[child] = recent_restarts.get(child, 0) + 1
        actors: dict[str, Any] = {"healthy": True, "restarts": {}, "mailbox": {}}
        if e.actors is not None:
            actors = {
                "healthy": e.actors.healthy,
                "gave_up": e.actors.supervisor.gave_up_reason,
                "restarts": e.actors.supervisor.restart_counts(),
                "restarts_last_minute": recent_restarts,
                "mailbox": {
                    name: e.actors.mailbox_depth(name) for name in ("cache", "limiter", "presence")
                },
            }
        topics = await self._topics()
        status = e.pubsub.status
        draining = None
        if e.draining_since is not None:
            draining = {
                "since": e.draining_since,
                "sockets_left": sum(1 for s in e.sockets if not e.keeps_when_draining(s)),
            }
        return {
            "node": e.id,
            "name": node_name(e.id),
            "ts": time.time(),
            "started_at": self.started_at,
            "version": VERSION,
            "pid": os.getpid(),
            "accepting": e.accepting,
            "draining": draining,
            "connections": len(e.sockets),
            "joined_channels": counters.joined_channels,
            "messages_in": totals["in"],
            "messages_out": totals["out"],
            "in_per_s": round(rate("in"), 1),
            "out_per_s": round(rate("out"), 1),
            "p50_ms": round(activity.p50_ms, 3),
            "p99_ms": round(activity.p99_ms, 3),
            "fanouts_per_s": round(activity.fanouts / elapsed, 1),
            "rate_limited": dict(counters.rate_limited),
            "rate_limited_per_s": round(rate("limited"), 2),
            "slow_consumers": totals["slow"],
            "slow_per_s": round(rate("slow"), 2),
            "restarts": 0 if last is None else int(totals["restarts"] - last["restarts"]),
            "cpu_percent": round(max(0.0, cpu_percent), 1),
            "memory_bytes": resident_memory(),
            "mailbox": max(actors["mailbox"].values(), default=0),
            "actors": actors,
            "pubsub": {
                "backend": e.pubsub.backend_name,
                "connected": status.connected,
                "reason": status.reason,
            },
            **topics,
        }

    async def _topics(self) -> dict[str, Any]:
        """This node's topics: all of them if few, else the busiest ten, and how many."""
        e = self.node
        presence_counts: dict[str, int] = {}
        if e.presence is not None:
            try:
                presence_counts = (await e.presence.summary())["topics"]
            except ActorError:
                pass
        subscribers = app_topics(e)
        listed = sorted(subscribers, key=lambda t: (-subscribers[t], t))
        complete = len(listed) <= ALL_TOPICS_UP_TO
        return {
            "topic_count": len(listed),
            "topics_complete": complete,
            "topics": [
                {
                    "topic": t,
                    "subscribers": subscribers[t],
                    "presences": presence_counts.get(t, 0),
                    "messages_per_s": self.topic_rates.get(t, 0.0),
                }
                for t in (listed if complete else listed[:10])
            ],
        }

    def view(self) -> dict[str, Any]:
        """What the console shows: live and lost nodes, the busiest topics over the
        cluster, alerts and recent events."""
        samples = [s for _, s in sorted(self.nodes.values(), key=lambda item: item[1]["node"])]
        topics: dict[str, dict[str, Any]] = {}
        for sample in samples:
            for entry in sample.get("topics", ()):
                merged = topics.setdefault(
                    entry["topic"],
                    {
                        "topic": entry["topic"],
                        "subscribers": 0,
                        "presences": 0,
                        "messages_per_s": 0,
                    },
                )
                merged["subscribers"] += entry["subscribers"]
                # Presence is replicated and every node sees every broadcast: not summed.
                merged["presences"] = max(merged["presences"], entry["presences"])
                merged["messages_per_s"] = max(
                    merged["messages_per_s"], entry.get("messages_per_s", 0)
                )
        busiest = sorted(topics.values(), key=lambda t: (-t["subscribers"], t["topic"]))[:10]
        complete = all(s.get("topics_complete", False) for s in samples)
        lost = sorted(self.lost.values(), key=lambda n: n["name"])
        own = self.nodes.get(self.node.id)
        return {
            "ts": time.time(),
            "node": self.node.id,
            "nodes": samples,
            "lost": lost,
            "topics": busiest,
            "topic_count": len(topics)
            if complete
            else max((s.get("topic_count", 0) for s in samples), default=0),
            "topic_count_exact": complete,
            "alerts": self.active_alerts,
            "events": list(self.events)[-30:],
            "hearing_others": own is None or bool(own[1]["pubsub"]["connected"]),
        }


def app_topics(node: Node) -> dict[str, int]:
    """Topic -> local subscribers, for the app's topics only (not the console's taps)."""
    found = {}
    for topic, count in node.pubsub.topics().items():
        if topic.startswith(INTERNAL_PREFIXES) or topic == CONNECTIONS_TOPIC:
            continue  # (admission follows the connections presence topic's diffs)
        count -= node.taps.count(topic)
        if count > 0:
            found[topic] = count
    return found


def _point(sample: dict[str, Any]) -> dict[str, float]:
    point = {name: sample.get(name, 0.0) for name in ("connections", "in_per_s", "out_per_s")}
    point.update(
        p50_ms=sample.get("p50_ms", 0.0),
        p99_ms=sample.get("p99_ms", 0.0),
        rate_limited_per_s=sample.get("rate_limited_per_s", 0.0),
        slow_per_s=sample.get("slow_per_s", 0.0),
        restarts=sample.get("restarts", 0),
        mailbox=sample.get("mailbox", 0),
        cpu_percent=sample.get("cpu_percent", 0.0),
        memory_mb=sample.get("memory_bytes", 0) / _MB,
    )
    return point
