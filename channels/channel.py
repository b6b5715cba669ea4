"""The ``Channel`` base class: Phoenix's channel callbacks, for Python.

Subclass it, route a topic pattern to it (:class:`switchboard.channels.router.Router`), and override
the hooks you need. Hooks may be plain functions or coroutines.

Hooks and what they may return::

    join(payload)               ok(response) | error(response)        (None means ok({}))
    handle_in(event, payload)   reply(status, response) | ok(...) | error(...)
                                | NOREPLY (or None) | Stop(reason, reply=None)
    handle_out(event, payload)  NOREPLY (or None) | Stop(...)  -- only for ``intercept`` events
    handle_info(message)        NOREPLY (or None) | Stop(...)
    terminate(reason)           None                                 -- after leave, close, crash

An exception in a hook crashes that channel alone: its client gets ``phx_error`` (or
``{"reason": "join crashed"}`` for a join) and rejoins; other channels carry on.

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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from switchboard.server.codec import Payload

if TYPE_CHECKING:
    from switchboard.server.channel_server import ChannelServer
    from switchboard.server.endpoint import Endpoint


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
    """What a channel knows of its socket: ids from connect and free-form ``assigns``."""

    id: str
    user_id: str
    assigns: dict[str, Any]


class Channel:
    """Base class for channels; one instance per joined topic per socket."""

    #: Broadcast events that skip the fastlane and go through ``handle_out`` per subscriber.
    intercept: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, topic: str, socket: SocketInfo, server: ChannelServer) -> None:
        self.topic = topic
        self.socket = socket
        self._server = server

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
        return self._server.join_ref

    @property
    def endpoint(self) -> Endpoint:
        return self._server.endpoint

    def push(self, event: str, payload: Payload) -> None:
        """Send ``event`` to this channel's client only."""
        self._server.push(event, payload)

    def broadcast(self, event: str, payload: Payload) -> None:
        """Send ``event`` to every subscriber of this topic, on every node, sender included."""
        self.endpoint.pubsub.broadcast(self.topic, event, payload)

    def broadcast_from(self, event: str, payload: Payload) -> None:
        """Like :meth:`broadcast`, but not to this channel's own client."""
        self.endpoint.pubsub.broadcast(self.topic, event, payload, exclude=self._server)

    # -- presence (Phoenix.Presence) ------------------------------------------------------

    async def track(self, key: str, meta: dict[str, Any]) -> None:
        """Track ``key`` in this topic with ``meta``; it leaves when the channel ends.

        The topic's subscribers get a ``presence_diff``; each (socket, topic, key) is one
        meta with its own ``phx_ref``, so one user in two tabs is one key with two metas.
        """
        await self._server.track(key, meta)

    async def update_presence(self, key: str, meta: dict[str, Any]) -> None:
        await self._server.update_presence(key, meta)

    async def untrack(self, key: str) -> None:
        await self._server.untrack(key)

    async def push_presence_state(self) -> None:
        """Push the topic's whole presence (``presence_state``) to this channel's client."""
        await self._server.push_presence_state()

    def send_info(self, message: Any) -> None:
        """Queue ``message`` for ``handle_info`` (Phoenix's ``send(self(), msg)``)."""
        self._server.post_info(message)
