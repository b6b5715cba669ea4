"""Emitters: push to connected clients from any Python process, through Redis.

A web backend (Django, FastAPI, a worker) often knows first that something happened; it
has no socket of its own. An emitter writes a broadcast to Redis in exactly the format the
nodes use among themselves, so it reaches the topic's subscribers on every node of a
cluster whose ``SWITCHBOARD_PUBSUB_URL`` is the same Redis::

    from switchboard import Emitter

    emitter = Emitter("redis://127.0.0.1:6379/0")
    emitter.broadcast("room:lobby", "news", {"text": "deploy done"})
    emitter.disconnect("users_socket:alice")     # close alice's sockets everywhere

``AsyncEmitter`` is the same for asyncio code (``await emitter.broadcast(...)``). Both
return how many nodes received the message (Redis counts the subscribed nodes; 0 means no
node has a subscriber for that topic right now). On a topic that keeps history (a node has
joined or published it lately) the broadcast goes into the history, with its position, as
a node's own would: clients that drop for a moment recover it. Without Redis there is no cluster to
reach: use the node's HTTP API (``POST /api/broadcast``) or, in the same process,
``Endpoint.broadcast``.

Security note: anyone who can write to that Redis can broadcast to every client; keep it
private to the cluster and the backends that publish.
"""

from __future__ import annotations

import secrets
from types import TracebackType
from typing import Any

import redis
import redis.asyncio

from switchboard.server import codec
from switchboard.server.codec import Payload
from switchboard.server.pubsub import redis_history
from switchboard.server.pubsub.redis import (
    DEFAULT_PREFIX,
    encode_envelope,
    encode_history_head,
)


def _message(
    prefix: str, origin: bytes, topic: str, event: str, payload: Any
) -> tuple[str, bytes, list[Any] | None]:
    """The Redis channel and envelope of a broadcast, and for a text one the arguments of
    the EMIT script (see :mod:`~switchboard.server.pubsub.redis_history`), which keeps it
    in the topic's history if it has one; ValueError if it can't be sent."""
    problems = codec.broadcast_problems(topic, event, payload)
    if problems:
        raise ValueError(f"cannot broadcast {event!r} on {topic!r}: {'; '.join(problems)}")
    frame = codec.encode_broadcast(topic, event, payload)
    channel, envelope = prefix + topic, encode_envelope(origin, event, frame)
    if not isinstance(frame, str):  # a binary broadcast has no field for a position
        return channel, envelope, None
    keys = redis_history.Keys(prefix)
    head = encode_history_head(origin, event, 0)
    return (
        channel,
        envelope,
        [keys.log(topic), keys.meta(topic), channel, envelope, head, event, frame],
    )


def _origin() -> bytes:
    # Nodes drop envelopes carrying their own id (their echoes); an emitter's never matches.
    return f"emitter:{secrets.token_hex(6)}".encode()


class Emitter:
    """Publishes broadcasts and disconnects through Redis, synchronously."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self._origin = _origin()
        self._redis: redis.Redis = redis.Redis.from_url(url)
        self._emit = self._redis.register_script(redis_history.EMIT)

    def broadcast(self, topic: str, event: str, payload: Payload) -> int:
        """Broadcast ``event`` with ``payload`` to every subscriber of ``topic``."""
        channel, envelope, emit = _message(self.prefix, self._origin, topic, event, payload)
        if emit is None:
            return int(self._redis.publish(channel, envelope))
        return int(self._emit(keys=emit[:2], args=emit[2:]))

    def disconnect(self, socket_id: str) -> int:
        """Close every socket whose ``Socket.id()`` is ``socket_id``, on every node."""
        return self.broadcast(socket_id, "disconnect", {})

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


class AsyncEmitter:
    """:class:`Emitter` for asyncio code."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self._origin = _origin()
        self._redis: redis.asyncio.Redis = redis.asyncio.Redis.from_url(url)
        self._emit = self._redis.register_script(redis_history.EMIT)

    async def broadcast(self, topic: str, event: str, payload: Payload) -> int:
        channel, envelope, emit = _message(self.prefix, self._origin, topic, event, payload)
        if emit is None:
            return int(await self._redis.publish(channel, envelope))
        return int(await self._emit(keys=emit[:2], args=emit[2:]))

    async def disconnect(self, socket_id: str) -> int:
        return await self.broadcast(socket_id, "disconnect", {})

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def __aenter__(self) -> AsyncEmitter:
        return self

    async def __aexit__(
        self, *exc: type[BaseException] | BaseException | TracebackType | None
    ) -> None:
        await self.aclose()
