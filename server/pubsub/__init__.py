"""Pub/sub: local fan-out in :mod:`.core`, backends that carry it between nodes."""

from __future__ import annotations

from urllib.parse import urlsplit

from switchboard.server.pubsub.base import Backend, BackendStatus
from switchboard.server.pubsub.core import PubSub, Subscriber
from switchboard.server.pubsub.memory import MemoryBackend, hub_named

__all__ = ["Backend", "BackendStatus", "PubSub", "Subscriber", "backend_from_url"]


def backend_from_url(url: str) -> Backend:
    """``memory://`` (private hub), ``memory://NAME`` (shared in-process hub), ``redis://...``."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        name = url[len("memory://") :]
        return MemoryBackend(hub_named(name) if name else None)
    if scheme in ("redis", "rediss", "unix"):
        from switchboard.server.pubsub.redis import RedisBackend

        return RedisBackend(url)
    raise ValueError(
        f"unsupported pub/sub URL scheme {scheme!r} in {url!r}; use memory:// or redis://"
    )
