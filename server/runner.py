"""Run a node under uvicorn, with a graceful drain on SIGTERM.

uvicorn alone closes every WebSocket at once on SIGTERM. We first drain (see
:meth:`switchboard.server.node.Node.drain`), then let uvicorn shut down, and force an exit if
the whole thing outlasts ``shutdown_timeout``. A second signal forces the exit at once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from types import FrameType
from typing import Any

import uvicorn

from switchboard.server.guard import LISTEN_BACKLOG, ConnectionGuard
from switchboard.server.node import Node

logger = logging.getLogger("switchboard.runner")


def tune_collector(threshold: int) -> None:
    """Make the cyclic garbage collector cheaper for a server holding many live objects.

    Every 700 allocations (Python's default) the collector scans the youngest generation,
    and the older ones after enough younger scans, while each connect adds a socket's
    objects to the heap: with the collector off, a storm of 5000 connects ran 1.2x faster.
    So what exists once the node has started (modules, the app, the actors) moves to the
    permanent generation, never scanned again (``gc.freeze``), and the youngest generation
    is scanned every ``threshold`` allocations, the older ones at Python's ratios. 0 leaves
    the collector alone."""
    if threshold <= 0:
        return
    gc.collect()  # garbage of the start goes now rather than being frozen with the rest
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(threshold, middle, oldest)


class DrainingServer(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, node: Node, guard: ConnectionGuard | None = None
    ) -> None:
        super().__init__(config)
        self.node = node
        self.guard = guard
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = loop = asyncio.get_running_loop()
        if self.guard is not None:
            previous = loop.get_exception_handler()

            def default(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
                if previous is not None:
                    previous(loop, context)
                else:
                    loop.default_exception_handler(context)

            loop.set_exception_handler(self.guard.exception_handler(default))
        await super().startup(sockets)
        tune_collector(self.node.settings.gc_threshold)
        # asyncio uses one number for the kernel's queue and for how many connections it
        # accepts at once; the latter is kept small (guard.accept_batch), the queue is not.
        for sock in sockets or ():
            sock.listen(LISTEN_BACKLOG)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not calling uvicorn's handler on purpose: it would re-raise the signal after the
        # shutdown, and a drained node should exit with 0.
        if self._draining:  # a second signal: stop now
            self.should_exit = self.force_exit = True
            return
        if self._loop is None or not self.started:
            self.should_exit = True  # still starting: nothing to drain yet
            return
        self._draining = True
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        assert self._loop is not None
        settings = self.node.settings
        self._loop.call_later(settings.shutdown_timeout, self._force_exit)
        self._drain_task = self._loop.create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        settings = self.node.settings
        try:
            budget = max(1.0, settings.shutdown_timeout - 5.0)
            await asyncio.wait_for(self.node.drain(settings.drain_period), budget)
        except TimeoutError:
            logger.warning("drain did not finish in time; shutting down anyway")
        except Exception:
            logger.exception("drain failed; shutting down anyway")
        self.should_exit = True

    def _force_exit(self) -> None:
        logger.error(
            "shutdown took longer than %.0f s; forcing exit",
            self.node.settings.shutdown_timeout,
        )
        self.should_exit = self.force_exit = True
