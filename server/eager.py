"""Run a coroutine synchronously until it first suspends.

Most awaits on the hot path never suspend: writing a frame to a transport that is not
paused, or a channel callback that replies at once. Wrapping each of them in a task costs a
task switch per frame and halves fan-out throughput. :func:`start` runs the coroutine
inline; only if it really suspends does the caller get an awaitable for the rest, which it
hands to a task. This is what Python 3.12's eager tasks do, written for 3.11.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any


def start(coro: Coroutine[Any, Any, Any]) -> Resumed | None:
    """Step ``coro``; None if it finished (its result is discarded), else its remainder.

    An exception raised before the first suspension propagates to the caller.
    """
    try:
        suspended_on = coro.send(None)
    except StopIteration:
        return None
    return Resumed(coro, suspended_on)


def start_task(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Step ``coro`` inline; if it suspends, the rest runs on in a task, which is returned."""
    rest = start(coro)
    if rest is None:
        return None
    return asyncio.get_running_loop().create_task(_finish(rest))


async def _finish(rest: Resumed) -> None:
    await rest


class Resumed:
    """The rest of a coroutine that suspended on ``suspended_on``; await it inside a task.

    It re-yields the future the coroutine is blocked on, exactly as ``yield from`` would,
    so the task waits on that future and resumes the coroutine with its outcome.
    """

    __slots__ = ("_coro", "_suspended_on")

    def __init__(self, coro: Coroutine[Any, Any, Any], suspended_on: Any) -> None:
        self._coro = coro
        self._suspended_on = suspended_on

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._suspended_on
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and the like go into the coroutine
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value

    def close(self) -> None:
        """Abandon the remainder without running it (no 'never awaited' warning)."""
        self._coro.close()
