"""Runs one channel of one socket: its mailbox, its hooks, and what their results mean.

Phoenix gives every channel a process; we give it a mailbox on the event loop. Items are
handled one at a time, in order. A hook runs inline (:mod:`~switchboard.server.eager`) and
only a hook that really waits (on an actor, on I/O) gets a task, so a ``ping`` costs no task switch
while a slow ``handle_in`` delays only its own channel, never the socket's heartbeats or
its other channels.

A join is answered ok only once the channel is really subscribed
(:meth:`~switchboard.server.pubsub.core.PubSub.join`): broadcasts that arrive meanwhile
are held and follow the reply. On a history topic the reply carries ``position`` and
``recovered``, and what a ``since`` recovers is written after the reply and before what
was held, so the client sees each broadcast once, in order. If the history cannot be
read (pub/sub outage) the join is refused with ``{"reason": "unavailable"}`` and
phoenix.js tries again; so is a push whose broadcast the node cannot keep.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from switchboard.actors.bridge import ask
from switchboard.actors.cache import CacheGet, CachePut
from switchboard.actors.errors import ActorError, ActorTimeoutError
from switchboard.channels.channel import NOREPLY, Channel, Reply, Stop
from switchboard.server import codec, eager, logs, telemetry
from switchboard.server.codec import Frame, Message, Payload
from switchboard.server.pubsub import Unavailable

if TYPE_CHECKING:
    from switchboard.presence.tracker import Presence
    from switchboard.server.socket_server import SocketServer

logger = logging.getLogger("switchboard.channel")

DIFF_EVENT, STATE_EVENT = "presence_diff", "presence_state"

JOINING, JOINED, STOPPED = "joining", "joined", "stopped"

#: The hook each kind of mailbox item runs.
_HOOK_OF = {
    "in": "handle_in",
    "join": "join",
    "out": "handle_out",
    "info": "handle_info",
    "leave": "terminate",
    "lost": "terminate",
}


_async_kinds: dict[type[Channel], frozenset[str]] = {}


def async_kinds(channel_class: type[Channel]) -> frozenset[str]:
    """The kinds of mailbox item whose hook ``channel_class`` defines with ``async def``
    (computed once per class)."""
    found = _async_kinds.get(channel_class)
    if found is None:
        found = _async_kinds[channel_class] = frozenset(
            kind
            for kind, hook in _HOOK_OF.items()
            if inspect.iscoroutinefunction(getattr(channel_class, hook))
        )
    return found


UNAVAILABLE = {"reason": "unavailable"}


class ChannelServer:
    """The server side of one :class:`~switchboard.channels.channel.Channel`, and the
    :class:`~switchboard.channels.channel.ChannelHost` it acts through."""

    __slots__ = (
        "socket",
        "node",
        "topic",
        "join_ref",
        "channel",
        "state",
        "_intercept",
        "_outbox",
        "_mailbox",
        "_busy",
        "_task",
        "tracks_presence",
        "_presence_synced",
        "_idle_waiter",
        "_held",
        "_diffs_held",
        "_out_ref",
        "_async_kinds",
    )

    def __init__(
        self, socket: SocketServer, channel_class: type[Channel], topic: str, join_ref: str
    ) -> None:
        self.socket = socket
        self.node = socket.node
        self.topic = topic
        self.join_ref = join_ref
        self.state = JOINING
        self._intercept = channel_class.intercept
        self._outbox = socket.outbox
        self._mailbox: deque[tuple[Any, ...]] | None = None  # made when a message must wait
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self.tracks_presence = False
        self._presence_synced = False  # a presence_state was pushed to the client
        self._idle_waiter: asyncio.Future[None] | None = None
        #: While the join waits to be subscribed: broadcasts to send after its reply.
        self._held: list[tuple[str, Frame]] | None = None
        #: presence_diffs that came while the channel's first track was under way: dropped
        #: if a presence_state push starts (it holds them), else sent once the channel idles.
        self._diffs_held: list[Frame] | None = None
        #: While handle_out runs: the broadcast's position, the ref of what it pushes.
        self._out_ref: str | None = None
        self._async_kinds = async_kinds(channel_class)
        self.channel = channel_class(topic, socket.info, self)

    def __repr__(self) -> str:
        return f"<ChannelServer {self.topic} join_ref={self.join_ref} socket={self.socket.info.id}>"

    # -- the fastlane: broadcasts from pub/sub ------------------------------------------

    def deliver(self, event: str, frame: Frame) -> None:
        if self._held is not None:
            self._held.append((event, frame))
        elif self._diffs_held is not None and event == DIFF_EVENT:
            self._diffs_held.append(frame)
        elif self._intercept and event in self._intercept:
            if event == DIFF_EVENT and not self._presence_synced:
                return  # the presence_state on its way already holds it: see below
            self._post(("out", event, frame))
        else:
            self._outbox.put(frame)

    # -- mailbox ---------------------------------------------------------------------------

    def post_join(self, payload: Any, ref: str | None) -> None:
        self._post(("join", payload, ref))

    def post_in(self, message: Message) -> None:
        self._post(("in", message))

    def post_leave(self, ref: str | None) -> None:
        self._post(("leave", ref))

    def post_info(self, message: Any) -> None:
        self._post(("info", message))

    def history_lost(self) -> None:
        """Broadcasts this channel's client should have had are gone: error the channel
        (after whatever it is doing), so the client rejoins and learns it did not recover."""
        self._post(("lost",))

    # -- the ChannelHost interface ---------------------------------------------------------

    def push(self, event: str, payload: Payload) -> None:
        self.socket.protocol.push(self.topic, self.join_ref, event, payload, self._out_ref)
        self.socket.flush()

    def broadcast(self, event: str, payload: Payload, *, include_self: bool) -> None:
        self.node.pubsub.broadcast(
            self.topic, event, payload, exclude=None if include_self else self
        )

    def broadcast_to(self, topic: str, event: str, payload: Payload) -> None:
        self.node.pubsub.broadcast(topic, event, payload)

    async def cache_get(self, key: str) -> Any:
        return await ask(
            self._actors().cache, CacheGet(key), timeout=self.node.settings.actor_timeout
        )

    async def cache_put(self, key: str, value: Any, ttl: float | None) -> None:
        await ask(
            self._actors().cache,
            CachePut(key, value, ttl),
            timeout=self.node.settings.actor_timeout,
        )

    def _actors(self) -> Any:
        if self.node.actors is None:
            raise RuntimeError("this node runs no actors (no cache, no presence)")
        return self.node.actors

    # -- presence --------------------------------------------------------------------------

    @property
    def presence_owner(self) -> str:
        return f"{self.socket.serial}:{self.join_ref}"

    def _presence(self) -> Presence | None:
        """The node's presence, or None where ``SWITCHBOARD_PRESENCE=off`` turns it off (then
        tracking does nothing and every topic is empty)."""
        if not self.node.settings.presence:
            return None
        presence = self.node.presence
        if presence is None:
            raise RuntimeError("presence is not running on this node (no actor tree)")
        return presence

    async def presence_list(self, topic: str) -> dict[str, Any]:
        presence = self._presence()
        return {} if presence is None else await presence.list(topic)

    async def track(self, key: str, meta: dict[str, Any]) -> None:
        presence = self._presence()
        if presence is not None and self.state != STOPPED:  # a stopped channel's would stay
            self.tracks_presence = True  # before the await: a stop meanwhile must untrack it
            if (
                not self._presence_synced
                and self._diffs_held is None
                and DIFF_EVENT not in self._intercept  # nor a state push under way
            ):
                # Phoenix's after-join: track, then push the state. The diffs flushed while
                # the track waits are in that state too; in a join storm, sending both made
                # up to 40% of the presence bytes.
                self._diffs_held = []
            try:
                await presence.track(self.presence_owner, self.topic, key, meta)
            finally:
                if self._diffs_held is not None and not self._busy:  # not from a handler
                    self._release_diffs()

    async def update_presence(self, key: str, meta: dict[str, Any]) -> None:
        presence = self._presence()
        if presence is not None:
            await presence.update(self.presence_owner, self.topic, key, meta)

    async def untrack(self, key: str) -> None:
        presence = self._presence()
        if presence is not None:
            await presence.untrack(self.presence_owner, self.topic, key)

    async def push_presence_state(self) -> None:
        """Push the topic's state; until the first one is out, skip its presence diffs.

        The state is the topic's as of the last flush of presence changes, or of the next
        one if it must wait: it holds every diff flushed meanwhile. Skipping those spares
        the client what it would get twice (phoenix.js holds diffs until its first state
        anyway), also when this times out and is tried again. The state is pushed
        synchronously as it becomes ready, so the diffs after it are delivered.
        """
        presence = self._presence()
        if presence is None:
            return
        self._diffs_held = None  # the state holds them
        if not self._presence_synced:
            self._intercept = self._intercept | {DIFF_EVENT}  # until _push_state
        await presence.push_state(self.topic, self._push_state)

    def _push_state(self, payload_json: str) -> None:
        if self.state == STOPPED:
            return
        self.socket.protocol.push_json(self.topic, self.join_ref, STATE_EVENT, payload_json)
        self.socket.flush()
        if not self._presence_synced:
            self._presence_synced = True
            self._intercept = type(self.channel).intercept

    def _forget_presence(self) -> None:
        if self.tracks_presence and self.node.presence is not None:
            self.node.presence.forget(self.presence_owner)

    def _post(self, item: tuple[Any, ...]) -> None:
        if self.state == STOPPED:
            return
        if self._busy:
            if self._mailbox is None:
                self._mailbox = deque()
            self._mailbox.append(item)
        else:
            self._run(item)

    def _run(self, item: tuple[Any, ...] | None = None) -> None:
        """Handle ``item`` and then the mailbox, inline, until a handler has to wait."""
        self._busy = True
        while self.state != STOPPED:
            if item is None:
                if not self._mailbox:
                    break
                item = self._mailbox.popleft()
            if item[0] in self._async_kinds:
                # An async hook runs in a task of its own from its first line, so what
                # needs a current task (asyncio.timeout, TaskGroup) works in it.
                self._task = asyncio.get_running_loop().create_task(self._in_task(item))
                return
            rest = eager.start(self._handle(item))
            item = None
            if rest is not None:
                self._task = asyncio.get_running_loop().create_task(self._resume(rest))
                return
        self._mailbox = None  # empty (or stopped): most channels never need it again
        self._busy = False
        if self._diffs_held is not None and self.state != STOPPED:
            self._release_diffs()
        if self._idle_waiter is not None and not self._idle_waiter.done():
            self._idle_waiter.set_result(None)

    def _release_diffs(self) -> None:
        """The channel tracked and went idle without pushing a presence_state: its client
        gets the diffs held meanwhile, in order, as it would have without the hold."""
        held, self._diffs_held = self._diffs_held, None
        for frame in held or ():
            self.deliver(DIFF_EVENT, frame)

    async def wait_idle(self) -> None:
        """Return once every message already received has been handled (for draining)."""
        if self._busy:
            if self._idle_waiter is None or self._idle_waiter.done():
                self._idle_waiter = asyncio.get_running_loop().create_future()
            await self._idle_waiter

    async def _resume(self, rest: eager.Resumed) -> None:
        try:
            await rest
        except asyncio.CancelledError:
            return
        finally:
            self._task = None
        self._run()

    async def _in_task(self, item: tuple[Any, ...]) -> None:
        try:
            await self._handle(item)
        except asyncio.CancelledError:
            return
        finally:
            self._task = None
        self._run()

    async def _awaited(self, result: Any) -> Any:
        """What an awaitable a hook returned gives, awaited in a task of this channel's own
        (never inline in whatever called us), so what needs a current task works."""
        if self._task is None or asyncio.current_task() is not self._task:
            return await asyncio.ensure_future(result)
        return await result

    # -- handling --------------------------------------------------------------------------

    async def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        # Restored by value, not by token: this may start inline and finish in a task,
        # whose context is a copy where the token would not be valid.
        previous_topic = logs.topic.get()
        logs.topic.set(self.topic)
        try:
            if kind == "in":
                message: Message = item[1]
                started = time.perf_counter()
                result = self.channel.handle_in(message.event, message.payload)
                if inspect.isawaitable(result):
                    result = await self._awaited(result)
                await self._after(result, message.ref, f"handle_in {message.event!r}")
                self._measure(message.event, time.perf_counter() - started)
            elif kind == "join":
                await self._join(item[1], item[2])
            elif kind == "out":
                _, event, payload = codec.decode_broadcast(item[2])
                # What it pushes carries the broadcast's position, so a recovering client
                # counts an intercepted broadcast like any other.
                self._out_ref = codec.broadcast_ref(item[2])
                try:
                    result = self.channel.handle_out(event, payload)
                    if inspect.isawaitable(result):
                        result = await self._awaited(result)
                finally:
                    self._out_ref = None
                await self._after(result, None, f"handle_out {event!r}")
            elif kind == "info":
                result = self.channel.handle_info(item[1])
                if inspect.isawaitable(result):
                    result = await self._awaited(result)
                await self._after(result, None, "handle_info")
            elif kind == "leave":
                await self._stop("left")
                self.socket.protocol.left(self.topic, self.join_ref, item[1])
            elif kind == "lost":
                logger.warning(
                    "channel %s: broadcasts it was owed are lost; erroring it", self.topic
                )
                await self._stop("history lost", crashed=True)
        except asyncio.CancelledError:
            raise
        except (ActorError, Unavailable) as exc:
            # Shared state is briefly out of reach: a clear error, not a crash.
            logger.warning("channel %s: %s in %s", self.topic, exc, kind)
            if kind == "in":
                reason = "timeout" if isinstance(exc, ActorTimeoutError) else "unavailable"
                self.socket.protocol.reply(
                    self.topic, self.join_ref, item[1].ref, "error", {"reason": reason}
                )
        except Exception:
            logger.exception("channel %s crashed in %s", self.topic, kind)
            await self._stop("crash", crashed=True)
        finally:
            logs.topic.set(previous_topic)
        self.socket.flush()

    def _measure(self, event: str, seconds: float) -> None:
        if seconds * 1000 > self.node.settings.slow_handle_in_ms:
            logger.warning(
                "slow handle_in: %s %r took %.1f ms",
                self.topic,
                event,
                seconds * 1000,
                extra={
                    "topic": self.topic,
                    "event": event,
                    "duration_ms": round(seconds * 1000, 1),
                },
            )
        if telemetry.attached(telemetry.HANDLE_IN):
            telemetry.execute(
                telemetry.HANDLE_IN, {"duration": seconds}, {"topic": self.topic, "event": event}
            )

    async def _join(self, payload: Any, ref: str | None) -> None:
        protocol = self.socket.protocol
        started = time.perf_counter()
        try:
            result = self.channel.join(payload)
            if inspect.isawaitable(result):
                result = await self._awaited(result)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("channel %s crashed in join", self.topic)
            result = Reply("error", {"reason": "join crashed"})
        if result is None:
            result = Reply("ok", {})
        if not isinstance(result, Reply):
            logger.error(
                "join of %s returned %r; expected ok(...) or error(...)", self.topic, result
            )
            result = Reply("error", {"reason": "join crashed"})
        if telemetry.attached(telemetry.JOIN):
            measurements = {"duration": time.perf_counter() - started}
            telemetry.execute(
                telemetry.JOIN, measurements, {"topic": self.topic, "status": result.status}
            )
        if result.status != "ok":
            self.state = STOPPED
            self.socket.channel_stopped(self, was_joined=False)
            protocol.join_failed(self.topic, self.join_ref, ref, result.response)
            return
        since = payload.get("since") if isinstance(payload, dict) else None
        self._held = []
        try:
            joined = await self.node.pubsub.join(self.topic, self, since)
        except Unavailable as exc:
            self._held = None
            logger.warning("refusing a join of %s: %s", self.topic, exc)
            self.state = STOPPED
            self.socket.channel_stopped(self, was_joined=False)
            protocol.join_failed(self.topic, self.join_ref, ref, UNAVAILABLE)
            return
        except BaseException:
            self._held = None
            raise
        response = result.response
        if joined is not None and isinstance(response, dict):
            response = {
                **response,
                "position": str(joined.position),
                "recovered": joined.recovered,
            }
        held, self._held = self._held, None
        if protocol.join_succeeded(self.topic, self.join_ref, ref, response):
            self.state = JOINED
            self.socket.channel_joined(self)
            self.socket.flush()  # the reply goes out before anything broadcast on the topic
            if joined is not None:
                for replayed_event, replayed in joined.replay:
                    self.deliver(replayed_event, replayed)
            for event, frame in held:
                self.deliver(event, frame)
        else:
            self.node.pubsub.unsubscribe(self.topic, self)
            if self.state != STOPPED:  # not superseded: the ok reply could not be encoded
                logger.error(
                    "join of %s replied with a response that cannot be encoded", self.topic
                )
                await self._stop("join_failed")

    async def _after(self, result: Any, ref: str | None, where: str) -> None:
        if result is None or result is NOREPLY:
            return
        if isinstance(result, Reply):
            if not self.socket.protocol.reply(
                self.topic, self.join_ref, ref, result.status, result.response
            ):
                logger.error("%s of %s returned a reply that cannot be encoded", where, self.topic)
        elif isinstance(result, Stop):
            final = (ref, result.reply.status, result.reply.response) if result.reply else None
            await self._stop(result.reason, crashed=not result.is_normal, final_reply=final)
        else:
            raise TypeError(
                f"{where} of {self.topic} returned {result!r}; expected a reply, NOREPLY or Stop"
            )

    async def _stop(
        self,
        reason: str,
        *,
        crashed: bool = False,
        final_reply: tuple[str | None, str, Payload] | None = None,
    ) -> None:
        """End the channel: unsubscribe, ``terminate``, then tell the client (close or error)."""
        if self.state == STOPPED:
            return
        was_joined = self.state == JOINED
        self.state = STOPPED
        if self._mailbox:
            self._mailbox.clear()
        if was_joined:
            self.node.pubsub.unsubscribe(self.topic, self)
        self.socket.channel_stopped(self, was_joined)
        self._forget_presence()
        await self._terminate(reason)
        if reason == "left":
            return
        if crashed:
            self.socket.protocol.channel_crashed(self.topic, self.join_ref)
        else:
            self.socket.protocol.channel_closed(self.topic, self.join_ref, final_reply)

    async def _terminate(self, reason: str) -> None:
        try:
            result = self.channel.terminate(reason)
            if inspect.isawaitable(result):
                await self._awaited(result)
        except Exception:
            logger.exception("terminate of channel %s raised", self.topic)

    def shutdown(self, reason: str) -> None:
        """Stop without telling the client: its socket is gone, or a new join replaced us."""
        if self.state == STOPPED:
            return
        was_joined = self.state == JOINED
        if was_joined:
            self.node.pubsub.unsubscribe(self.topic, self)
        # (A join still waiting to be subscribed is cancelled below; it unsubscribes itself.)
        self.state = STOPPED
        if self._mailbox:
            self._mailbox.clear()
        self.socket.channel_stopped(self, was_joined)
        self._forget_presence()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        rest = eager.start(self._terminate(reason))
        if rest is not None:
            asyncio.get_running_loop().create_task(_await(rest))


async def _await(rest: eager.Resumed) -> None:
    await rest
