"""Pub/sub: local fan-out in :mod:`.core`, backends that carry it between nodes, and
per-topic history (:mod:`.history`, :mod:`.sequencer`)."""

from __future__ import annotations

from urllib.parse import urlsplit

from switchboard.server.pubsub.base import Backend, BackendStatus, Unavailable
from switchboard.server.pubsub.core import Joined, PubSub, Subscriber
from switchboard.server.pubsub.history import HistoryLimits, Position
from switchboard.server.pubsub.memory import MemoryBackend, hub_named

__all__ = [
    "Backend",
    "BackendStatus",
    "HistoryLimits",
    "Joined",
    "Position",
    "PubSub",
    "Subscriber",
    "Unavailable",
    "backend_from_url",
]


def backend_from_url(url: str, history: HistoryLimits | None = None) -> Backend:
    """``memory://`` (private hub), ``memory://NAME`` (shared in-process hub), ``redis://...``.

    ``history`` bounds what each history topic keeps (default :class:`HistoryLimits`).
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        name = url[len("memory://") :]
        return MemoryBackend(hub_named(name) if name else None, history)
    if scheme in ("redis", "rediss", "unix"):
        from switchboard.server.pubsub.redis import RedisBackend

        return RedisBackend(url, history=history)
    raise ValueError(
        f"unsupported pub/sub URL scheme {scheme!r} in {url!r}; use memory:// or redis://"
    )
