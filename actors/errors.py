"""Errors raised when talking to actors.

One root, so callers on the event loop can catch everything actor-related at once::

    ActorError
    ├── ActorTimeoutError       the actor did not reply in time
    └── ActorUnavailableError   the actor is stopped, restarting, or its supervisor gave up

An exception raised by an actor's own handler for an ``ask`` is not wrapped: it reaches the
caller as-is, like a return value.
"""

from __future__ import annotations

__all__ = ["ActorError", "ActorTimeoutError", "ActorUnavailableError"]


class ActorError(Exception):
    """Base class for failures to get an answer from an actor."""


class ActorTimeoutError(ActorError):
    """The actor did not reply within the timeout (it may still be working on it)."""


class ActorUnavailableError(ActorError):
    """The actor is not running: stopped, restarting, or given up on by its supervisor."""
