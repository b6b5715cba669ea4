"""Telemetry events, in the spirit of Erlang's ``:telemetry``.

Code that does something worth measuring calls :func:`execute` with an event name (a tuple),
numbers (``measurements``) and context (``metadata``). Anyone interested calls :func:`attach`.
With nothing attached to an event, ``execute`` is a dictionary lookup, so it can sit on
hot paths. A handler that raises is detached and logged, as ``:telemetry`` does.

Events emitted by Switchboard::

    ("switchboard", "socket", "connect")     {"count": 1}              {"user_id", "node"}
    ("switchboard", "channel", "join")       {"duration": s}           {"topic", "status"}
    ("switchboard", "channel", "handle_in")  {"duration": s}           {"topic", "event"}
    ("switchboard", "pubsub", "broadcast")   {"duration": s, "subscribers": n}  {"topic", "event"}
    ("switchboard", "limiter", "reject")     {"count": 1}              {"kind", "key"}
    ("switchboard", "actor", "restart")      {"count": 1}              {"actor", "reason"}

Example::

    telemetry.attach("log-joins", ("switchboard", "channel", "join"),
                     lambda event, measurements, metadata: print(metadata["topic"]))
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger("switchboard.telemetry")

EventName = tuple[str, ...]
Handler = Callable[[EventName, Mapping[str, float], Mapping[str, Any]], None]

CONNECT: EventName = ("switchboard", "socket", "connect")
JOIN: EventName = ("switchboard", "channel", "join")
HANDLE_IN: EventName = ("switchboard", "channel", "handle_in")
BROADCAST: EventName = ("switchboard", "pubsub", "broadcast")
RATE_LIMITED: EventName = ("switchboard", "limiter", "reject")
ACTOR_RESTART: EventName = ("switchboard", "actor", "restart")

_handlers: dict[EventName, list[tuple[str, Handler]]] = {}


def attach(handler_id: str, event: EventName, handler: Handler) -> None:
    """Call ``handler(event, measurements, metadata)`` on every ``execute(event, ...)``."""
    if any(hid == handler_id for handlers in _handlers.values() for hid, _ in handlers):
        raise ValueError(f"a telemetry handler with id {handler_id!r} is already attached")
    _handlers.setdefault(event, []).append((handler_id, handler))


def detach(handler_id: str) -> bool:
    found = False
    for event, handlers in list(_handlers.items()):
        kept = [(hid, fn) for hid, fn in handlers if hid != handler_id]
        found = found or len(kept) != len(handlers)
        if kept:
            _handlers[event] = kept
        else:
            del _handlers[event]
    return found


def attached(event: EventName) -> bool:
    """Cheap check for callers that would have to compute measurements first."""
    return event in _handlers


def execute(
    event: EventName, measurements: Mapping[str, float], metadata: Mapping[str, Any]
) -> None:
    handlers = _handlers.get(event)
    if not handlers:
        return
    for handler_id, handler in list(handlers):
        try:
            handler(event, measurements, metadata)
        except Exception:
            logger.exception("telemetry handler %r failed on %s; detaching it", handler_id, event)
            detach(handler_id)
