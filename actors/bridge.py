"""The one way asyncio code talks to actors: without ever blocking the event loop.

pykka's ``Future.get()`` blocks the calling thread, and so does ``await future``: its
``__await__`` yields once and then calls ``get()``. On the event loop that freezes every
socket until the actor answers. Here the actor's thread hands its reply to the loop with
``loop.call_soon_threadsafe`` instead, and the caller awaits a plain asyncio future::

    value = await ask(lambda: supervisor.get("cache"), CacheGet("k"), timeout=1.0)
    tokens = await call(ref, "remaining", "user:1")
    tell(lambda: supervisor.get("cache"), CachePut("k", b"v", ttl=30))

A target is an ``ActorRef`` or a zero-argument callable returning one, so that a supervised
child is looked up afresh on every call (its ref changes when it is restarted).

Errors: ``ActorTimeoutError`` if no reply came in time, ``ActorUnavailableError`` if the actor
is stopped or its supervisor has it down; an exception raised by the actor's handler is
re-raised as-is (except ``pykka.ActorDeadError``, which also becomes ``ActorUnavailableError``).

pykka's ``Future`` has no done-callback API, so ``ask`` builds the reply future itself — a
``ThreadingFuture`` that also calls back when set — and puts it in the actor's inbox the way
``ActorRef.ask`` does. That uses pykka's ``Envelope``, an internal type stable since pykka 2.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeAlias

import pykka
from pykka._envelope import Envelope
from pykka._types import OptExcInfo
from pykka.messages import ProxyCall

from switchboard.actors.errors import ActorTimeoutError, ActorUnavailableError

__all__ = ["ActorTarget", "ask", "call", "tell"]

logger = logging.getLogger("switchboard.actors")

ActorTarget: TypeAlias = pykka.ActorRef[Any] | Callable[[], pykka.ActorRef[Any]]


def _resolve(target: ActorTarget) -> pykka.ActorRef[Any]:
    if isinstance(target, pykka.ActorRef):
        return target
    return target()


class _ReplyFuture(pykka.ThreadingFuture[Any]):
    """A ``ThreadingFuture`` that runs a callback once the actor sets the reply."""

    def __init__(self, on_done: Callable[[_ReplyFuture], None]) -> None:
        super().__init__()
        self._on_done = on_done

    def set(self, value: Any | None = None) -> None:
        super().set(value)
        self._done()

    def set_exception(self, exc_info: OptExcInfo | None = None) -> None:
        super().set_exception(exc_info if exc_info is not None else sys.exc_info())
        self._done()

    def _done(self) -> None:
        # Runs on the actor's thread inside pykka's receive loop, where an exception would
        # kill the actor: never let one out.
        try:
            self._on_done(self)
        except Exception:
            logger.exception("delivering an actor reply to asyncio failed")


def _settle(waiter: asyncio.Future[Any], reply: _ReplyFuture, ref: pykka.ActorRef[Any]) -> None:
    """Runs on the loop: copy the actor's reply into the future the caller awaits."""
    if waiter.done():  # the caller timed out or was cancelled; drop the late reply
        return
    try:
        value = reply.get(timeout=0)
    except pykka.ActorDeadError:
        waiter.set_exception(ActorUnavailableError(f"{ref} stopped before replying"))
    except Exception as exc:
        waiter.set_exception(exc)
    else:
        waiter.set_result(value)


async def ask(target: ActorTarget, message: Any, *, timeout: float | None = 2.0) -> Any:
    """Send ``message`` and await the actor's reply without blocking the loop."""
    loop = asyncio.get_running_loop()
    ref = _resolve(target)
    waiter: asyncio.Future[Any] = loop.create_future()

    def on_done(reply: _ReplyFuture) -> None:
        try:
            loop.call_soon_threadsafe(_settle, waiter, reply, ref)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more

    if not ref.is_alive():
        raise ActorUnavailableError(f"{ref} is not running")
    ref.actor_inbox.put(Envelope(message, reply_to=_ReplyFuture(on_done)))
    if timeout is None:
        return await waiter
    # A timer rather than asyncio.wait_for: on 3.11, wait_for swallows a cancellation of
    # the caller that arrives as the reply does, and the cancelled task runs on.
    timer = loop.call_later(timeout, _time_out, waiter, ref, timeout)
    try:
        return await waiter
    finally:
        timer.cancel()


def _time_out(waiter: asyncio.Future[Any], ref: pykka.ActorRef[Any], timeout: float) -> None:
    if waiter.done():
        return
    if not ref.is_alive():  # it died with our message still queued
        waiter.set_exception(ActorUnavailableError(f"{ref} stopped before replying"))
    else:
        waiter.set_exception(ActorTimeoutError(f"{ref} did not reply within {timeout}s"))


async def call(
    target: ActorTarget, method: str, *args: Any, timeout: float | None = 2.0, **kwargs: Any
) -> Any:
    """Call ``method`` on the actor, as its proxy would, and await the result."""
    message = ProxyCall(attr_path=(method,), args=args, kwargs=kwargs)
    return await ask(target, message, timeout=timeout)


def tell(target: ActorTarget, message: Any) -> bool:
    """Fire and forget. Returns False, after a debug log, if the actor is not running."""
    try:
        _resolve(target).tell(message)
    except (pykka.ActorDeadError, ActorUnavailableError) as exc:
        logger.debug("dropped %r: %s", message, exc)
        return False
    return True
