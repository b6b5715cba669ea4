"""Stopping background tasks for sure.

``task.cancel()`` followed by one ``await`` is not enough on Python 3.11: a cancellation
that arrives as an awaited future completes can be swallowed (``asyncio.wait_for`` does
this), and the task runs on. :func:`stop_tasks` cancels again until every task is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger("switchboard.tasks")


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], timeout: float = 5.0) -> None:
    pending = {task for task in tasks if not task.done()}
    deadline = time.monotonic() + timeout
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(
            pending, timeout=min(0.2, max(0.0, deadline - time.monotonic()))
        )
        if pending and time.monotonic() >= deadline:
            logger.warning(
                "%d task(s) would not stop: %s", len(pending), [t.get_name() for t in pending]
            )
            return
