"""The node: one running Switchboard, its parts, and their start, stop and drain.

Each part has its own module: admission (:mod:`.admission`), the open sockets
(:mod:`.registry`), keeping caches and presence in step across nodes
(:mod:`.cluster_sync`), the running totals (:mod:`.counters`), the dashboard's numbers
(:mod:`.stats`). The node wires them together and owns their lifecycle, the graceful
drain and the idle sweep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from switchboard.server import telemetry
from switchboard.server.activity import Activity
from switchboard.server.admin import AdminSocket
from switchboard.server.admission import AdmissionControl
from switchboard.server.cluster_call import ClusterCall
from switchboard.server.config import Settings
from switchboard.server.counters import Counters
from switchboard.server.pubsub import PubSub
from switchboard.server.refusals import RefusalLog
from switchboard.server.registry import GOING_AWAY, SocketRegistry
from switchboard.server.taps import Taps
from switchboard.server.tasks import stop_tasks

if TYPE_CHECKING:
    from switchboard.actors.supervisor import SupervisorEvent
    from switchboard.presence.tracker import Presence
    from switchboard.server.cluster_sync import ClusterSync
    from switchboard.server.socket_server import SocketServer
    from switchboard.server.stats import ClusterStats
    from switchboard.server.supervision import ActorTree

logger = logging.getLogger("switchboard.node")
lifecycle = logging.getLogger("switchboard.lifecycle")


class Node:
    def __init__(
        self,
        settings: Settings,
        pubsub: PubSub,
        node_id: str,
        actors: ActorTree | None = None,
    ) -> None:
        self.settings = settings
        self.pubsub = pubsub
        #: ``name:bootid``: unique per process, so other nodes tell a restart apart.
        self.id = node_id
        self.actors = actors
        self.presence: Presence | None = None
        self.stats: ClusterStats | None = None
        self.counters = Counters()
        self.sockets = SocketRegistry(pubsub)
        self.admission = AdmissionControl(settings, node_id, self.counters)
        self.refusals = RefusalLog()
        #: Broadcasts per topic and fan-out times, for the console (pub/sub's observer).
        self.activity = Activity()
        pubsub.observer = self.activity.observe
        self.taps = Taps(pubsub)
        self.calls = ClusterCall(pubsub, node_id)
        self.draining_since: float | None = None
        self._sync: ClusterSync | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.pubsub.start()
        self.admission.start(self.pubsub)
        if self.actors is not None:
            from switchboard.presence.tracker import Presence
            from switchboard.server.cluster_sync import ClusterSync

            self._sync = ClusterSync(self.pubsub, self.actors)
            self._sync.start()
            await self.actors.start()
            settings = self.settings
            self.presence = Presence(
                self.pubsub,
                self.id,
                self.actors.presence,
                window=settings.presence_window,
                heartbeat=settings.presence_heartbeat,
                down_after=settings.node_timeout,
                timeout=settings.actor_timeout,
            )
            self._sync.presence = self.presence
            self.admission.presence = self.presence
            self.actors.listeners.append(self._actor_event)
            await self.presence.start()
        from switchboard.server.console import NodeConsole
        from switchboard.server.stats import ClusterStats

        NodeConsole(self).register()
        self.calls.start()
        self.stats = ClusterStats(self, expire_after=self.settings.node_timeout + 1.0)
        await self.stats.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_idle())

    async def stop(self) -> None:
        if self._sweeper is not None:
            await stop_tasks([self._sweeper])
        for socket in self.sockets:
            socket.close(GOING_AWAY, "server shutting down")
        if self.stats is not None:
            await self.stats.stop()
        self.calls.stop()
        self.taps.close_all()
        if self.presence is not None:
            await self.presence.stop()
        if self._sync is not None:
            self._sync.stop()
        if self.actors is not None:
            await self.actors.stop()
        self.admission.stop(self.pubsub)
        await self.pubsub.stop()

    @property
    def accepting(self) -> bool:
        """Whether new sockets are taken: until a drain starts."""
        return self.draining_since is None

    async def drain(self, period: float) -> None:
        """Stop taking sockets, then close the open ones in batches spread over ``period``.

        Readiness turns 503 at once, so the balancer sends no new clients. Each socket first
        answers the pushes it already received, then closes with 1012, so phoenix.js
        reconnects, through the balancer, to another node. Presence leaves go out as each
        channel ends; other nodes' clients see them as ordinary diffs.
        """
        self.draining_since = time.time()
        if self.stats is not None:
            self.stats.nudge()  # a short drain must still show on the console
        # The console's own sockets stay until the node stops: it shows the drain to the end.
        sockets = [s for s in self.sockets if not self.keeps_when_draining(s)]
        logger.info(
            "draining %d sockets over %.1f s",
            len(sockets),
            period,
            extra={"event": "drain_started"},
        )
        batches = max(1, min(len(sockets), 10))
        size = -(-len(sockets) // batches)  # ceiling division
        for index in range(batches):
            batch = sockets[index * size : (index + 1) * size]
            await asyncio.gather(
                *(socket.drain(timeout=5.0) for socket in batch if not socket.closed)
            )
            if index < batches - 1:
                await asyncio.sleep(period / batches)
        if self.presence is not None:
            await self.presence.settle()
        lifecycle.info("drained", extra={"event": "drain_finished"})

    @staticmethod
    def keeps_when_draining(socket: SocketServer) -> bool:
        return isinstance(socket.handler, AdminSocket)

    def _actor_event(self, event: SupervisorEvent) -> object:
        if event.kind == "restart":
            telemetry.execute(
                telemetry.ACTOR_RESTART,
                {"count": 1},
                {"actor": event.child, "reason": event.reason},
            )
        if event.child != "presence" or self.presence is None:
            return None
        if event.kind == "child_failed":
            self.presence.actor_failed()
        elif event.kind == "restart":
            return self.presence.actor_restarted()
        return None

    @property
    def healthy(self) -> bool:
        return self.actors is None or self.actors.healthy

    async def _sweep_idle(self) -> None:
        """Close sockets that sent nothing (not even a heartbeat) for ``idle_timeout``."""
        timeout = self.settings.idle_timeout
        while True:
            await asyncio.sleep(max(1.0, timeout / 4))
            deadline = time.monotonic() - timeout
            for socket in [s for s in self.sockets if s.last_seen < deadline]:
                logger.info(
                    "closing idle socket %s (nothing received for %.0f s)", socket.info.id, timeout
                )
                socket.close(GOING_AWAY, "idle")
