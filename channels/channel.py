"""The ``Channel`` base class: Phoenix's channel callbacks, for Python.

Subclass it, map a topic pattern to it in your :class:`~switchboard.Socket`'s ``channels``,
and override the hooks you need. Hooks may be plain functions or coroutines: a plain hook
runs inline as its message arrives (the cheapest path); an ``async def`` hook runs in a task
of its own, so ``asyncio.timeout``, task groups and ``current_task()`` work in it. Either
way a channel handles its messages one at a time, in order.

Hooks and what they may return::

    join(payload)               ok(response) | error(response)        (None means ok({}))
    handle_in(event, payload)   reply(status, response) | ok(...) | error(...)
                                | NOREPLY (or None) | Stop(reason, reply=None)
    handle_out(event, payload)  NOREPLY (or None) | Stop(...)  -- only for ``intercept`` events
    handle_info(message)        NOREPLY (or None) | Stop(...)
    terminate(reason)           None                                 -- after leave, close, crash

An exception in a hook crashes that channel alone: its client gets ``phx_error`` (or
``{"reason": "join crashed"}`` for a join) and rejoins; other channels carry on.

What a channel can do (each a method below): ``push`` to its client, ``broadcast`` and
``broadcast_from`` on its topic, ``broadcast_to`` another topic, ``track``/``untrack``
presence and read it, ``send_info`` to itself, and read and write the node's cache. It sees
its socket as ``self.socket``: the socket's ``id`` and the ``assigns`` its ``connect`` set.

History and recovery (opt-in: ``history = True``)::

    A channel class with ``history = True`` keeps its topics' broadcasts (the latest
    ``SWITCHBOARD_HISTORY_SIZE``, none older than ``SWITCHBOARD_HISTORY_TTL`` seconds) so a
    client that dropped for a moment gets what it missed when it rejoins. Each broadcast
    reaches the client with its position as the message's ``ref`` (phoenix.js passes it
    to ``channel.on`` callbacks as the second argument): an opaque string, the same on
    every node, growing within the topic. Every ok join reply carries ``"position"`` (the
    topic's latest) and ``"recovered"``. A join whose payload has ``"since": <position>``
    gets, after its reply, every broadcast after that position still kept, then the live
    ones, each once and in order, and ``"recovered": true``; if ``since`` is older than
    what is kept, from another epoch (the history was lost: Redis or the node restarted)
    or malformed, ``"recovered": false`` and nothing is replayed: refetch your state. If
    the server loses broadcasts it owed a joined client (it cannot fill a gap after a
    Redis outage), the channel errors (``phx_error``) so the client rejoins and learns.
    Binary broadcasts have no ``ref`` field in the V2 wire format: they are sent live but
    not kept. Presence diffs are not history. What ``handle_out`` pushes for an
    intercepted broadcast carries that broadcast's position as its ``ref``.

Example::

    class RoomChannel(Channel):
        def join(self, payload):
            return ok()

        def handle_in(self, event, payload):
            if event == "shout":
                self.broadcast("shout", payload)
                return NOREPLY
            return error({"reason": f"unknown event {event}"})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

#: A message body: a JSON object, or bytes for a binary frame.
Payload = dict[str, Any] | bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """Reply to the push being handled (or to the join) with ``status`` and ``response``."""

    status: str
    response: Payload = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the channel. ``normal``/``shutdown`` send ``phx_close``; anything else ``phx_error``."""

    reason: str = "normal"
    reply: Reply | None = None

    @property
    def is_normal(self) -> bool:
        return self.reason in ("normal", "shutdown", "left") or self.reason.startswith("shutdown:")


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOREPLY"


NOREPLY = _NoReply()


def ok(response: Payload | None = None) -> Reply:
    return Reply("ok", {} if response is None else response)


def error(response: Payload | None = None) -> Reply:
    return Reply("error", {} if response is None else response)


def reply(status: str, response: Payload | None = None) -> Reply:
    return Reply(status, {} if response is None else response)


@dataclass(frozen=True, slots=True)
class SocketInfo:
    """The socket as its channels see it: its ``id`` (None if anonymous) and the ``assigns``
    its ``connect`` filled in (the same dict, shared by every channel of the socket)."""

    id: str | None
    assigns: dict[str, Any]


class ChannelHost(Protocol):
    """What the server gives each channel: the only way a channel reaches the node."""

    join_ref: str

    def push(self, event: str, payload: Payload) -> None: ...
    def broadcast(self, event: str, payload: Payload, *, include_self: bool) -> None: ...
    def broadcast_to(self, topic: str, event: str, payload: Payload) -> None: ...
    def post_info(self, message: Any) -> None: ...
    async def track(self, key: str, meta: dict[str, Any]) -> None: ...
    async def update_presence(self, key: str, meta: dict[str, Any]) -> None: ...
    async def untrack(self, key: str) -> None: ...
    async def push_presence_state(self) -> None: ...
    async def presence_list(self, topic: str) -> dict[str, Any]: ...
    async def cache_get(self, key: str) -> Any: ...
    async def cache_put(self, key: str, value: Any, ttl: float | None) -> None: ...


class Channel:
    """Base class for channels; one instance per joined topic per socket."""

    #: Broadcast events that skip the fastlane and go through ``handle_out`` per subscriber.
    intercept: ClassVar[frozenset[str]] = frozenset()
    #: Keep this channel's broadcasts so rejoining clients recover what they missed.
    history: ClassVar[bool] = False

    def __init__(self, topic: str, socket: SocketInfo, host: ChannelHost) -> None:
        self.topic = topic
        self.socket = socket
        self._host = host

    # -- hooks ---------------------------------------------------------------------------

    def join(self, payload: Any) -> Any:
        return ok()

    def handle_in(self, event: str, payload: Any) -> Any:
        return error({"reason": f"unknown event {event!r}"})

    def handle_out(self, event: str, payload: Any) -> Any:
        self.push(event, payload)
        return NOREPLY

    def handle_info(self, message: Any) -> Any:
        return NOREPLY

    def terminate(self, reason: str) -> Any:
        return None

    # -- what a channel can do -------------------------------------------------------------

    @property
    def join_ref(self) -> str:
        return self._host.join_ref

    def push(self, event: str, payload: Payload) -> None:
        """Send ``event`` to this channel's client only."""
        self._host.push(event, payload)

    def broadcast(self, event: str, payload: Payload) -> None:
        """Send ``event`` to every subscriber of this topic, on every node, sender included."""
        self._host.broadcast(event, payload, include_self=True)

    def broadcast_from(self, event: str, payload: Payload) -> None:
        """Like :meth:`broadcast`, but not to this channel's own client."""
        self._host.broadcast(event, payload, include_self=False)

    def broadcast_to(self, topic: str, event: str, payload: Payload) -> None:
        """Broadcast on another topic, on every node (Phoenix's ``Endpoint.broadcast``).

        A ``disconnect`` event on a socket id closes every socket with that id.
        """
        self._host.broadcast_to(topic, event, payload)

    def send_info(self, message: Any) -> None:
        """Queue ``message`` for ``handle_info`` (Phoenix's ``send(self(), msg)``)."""
        self._host.post_info(message)

    # -- presence (Phoenix.Presence) ------------------------------------------------------

    async def track(self, key: str, meta: Mapping[str, Any]) -> None:
        """Track ``key`` in this topic with ``meta``; it leaves when the channel ends.

        The topic's subscribers get a ``presence_diff``; each (socket, topic, key) is one
        meta with its own ``phx_ref``, so one user in two tabs is one key with two metas.
        """
        await self._host.track(key, dict(meta))

    async def update_presence(self, key: str, meta: Mapping[str, Any]) -> None:
        """Replace the meta this channel tracks for ``key``."""
        await self._host.update_presence(key, dict(meta))

    async def untrack(self, key: str) -> None:
        await self._host.untrack(key)

    async def push_presence_state(self) -> None:
        """Push the topic's whole presence (``presence_state``) to this channel's client."""
        await self._host.push_presence_state()

    async def presence_list(self, topic: str | None = None) -> dict[str, Any]:
        """The presences of ``topic`` (default: this one), in Phoenix's format."""
        return await self._host.presence_list(self.topic if topic is None else topic)

    # -- the node's cache ----------------------------------------------------------------

    async def cache_get(self, key: str) -> Any:
        """The node's cached value for ``key``, or None."""
        return await self._host.cache_get(key)

    async def cache_put(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Cache ``value`` under ``key`` on this node, for ``ttl`` seconds (None: no expiry)."""
        await self._host.cache_put(key, value, ttl)
