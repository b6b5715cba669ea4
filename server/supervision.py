"""The node's supervision tree (cache, limiter, presence) and how its events reach the loop.

The supervisor reports on its own thread; events are logged there and handed to the
event loop with ``call_soon_threadsafe``, where presence is told to hold its requests while
its actor restarts and to refill the new actor once it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pykka

from switchboard.actors.cache import CacheActor
from switchboard.actors.limiter import LimiterActor
from switchboard.actors.supervisor import ChildSpec, Supervisor, SupervisorEvent
from switchboard.presence.actor import PresenceActor
from switchboard.server.config import Settings

logger = logging.getLogger("switchboard.actors")


class ActorTree:
    def __init__(self, settings: Settings, node: str) -> None:
        self.settings = settings
        self.node = node
        self.restarts = 0
        self.listeners: list[Callable[[SupervisorEvent], Any]] = []
        #: Called on the loop with (kind, key_or_prefix) after a local cache invalidation.
        self.on_cache_invalidate: Callable[[str, str], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Connects are counted on the loop (server.admission); HTTP API calls here.
        buckets = {"http": settings.rate("http_rate")}
        self.supervisor = Supervisor(
            [
                ChildSpec(
                    "cache",
                    lambda: CacheActor.start(
                        max_size=10_000,
                        max_bytes=settings.cache_max_bytes,
                        on_invalidate=self._invalidated,
                    ),
                ),
                ChildSpec("limiter", lambda: LimiterActor.start(buckets, clock=time.monotonic)),
                ChildSpec("presence", lambda: PresenceActor.start(node)),
            ],
            strategy="one_for_one",
            max_restarts=5,
            max_seconds=10.0,
            on_event=self._on_event,
        )

    def cache(self) -> pykka.ActorRef[Any]:
        return self.supervisor.get("cache")

    def limiter(self) -> pykka.ActorRef[Any]:
        return self.supervisor.get("limiter")

    def presence(self) -> pykka.ActorRef[Any]:
        return self.supervisor.get("presence")

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.supervisor.start)

    async def stop(self) -> None:
        await asyncio.to_thread(self.supervisor.stop)

    def mailbox_depth(self, name: str) -> int:
        try:
            return int(self.supervisor.get(name).actor_inbox.qsize())  # type: ignore[attr-defined]
        except Exception:
            return 0

    @property
    def healthy(self) -> bool:
        return self.supervisor.healthy

    def status(self) -> dict[str, Any]:
        return {
            "healthy": self.supervisor.healthy,
            "gave_up": self.supervisor.gave_up_reason,
            "restarts": self.supervisor.restart_counts(),
        }

    def _invalidated(self, kind: str, key_or_prefix: str) -> None:
        # Runs on the cache actor's thread: hand it to the loop, never block here.
        loop, callback = self._loop, self.on_cache_invalidate
        if loop is not None and callback is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(callback, kind, key_or_prefix)
            except RuntimeError:
                pass

    def _on_event(self, event: SupervisorEvent) -> None:
        # Runs on the supervisor's thread.
        if event.kind == "restart":
            self.restarts += 1
            logger.warning("actor %s restarted after: %s", event.child, event.reason)
        elif event.kind == "give_up":
            logger.error("supervisor gave up (%s); node reports itself unhealthy", event.reason)
        else:
            logger.warning("actor %s failed: %s", event.child, event.reason)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._dispatch, event)
            except RuntimeError:
                pass  # loop closed between the check and the call

    def _dispatch(self, event: SupervisorEvent) -> None:
        for listener in self.listeners:
            result = listener(event)
            if asyncio.iscoroutine(result):
                task = asyncio.get_running_loop().create_task(result)
                task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("actor event handler failed", exc_info=task.exception())
