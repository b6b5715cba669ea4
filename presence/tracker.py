"""The event-loop side of presence: what channels call, and what crosses nodes.

Channels ``track``/``update``/``untrack`` through here; the :class:`~presence.actor.PresenceActor`
holds the state. Diffs go to local subscribers only: each node computes its own from the
same replicated state, so a client gets each diff once, never once per node. Deltas,
heartbeats and snapshots travel between nodes on an internal topic through the pub/sub
backend. This module owns the timing (the diff window, heartbeats, node-down); the state
owns the rules.

Changes are sent out once per window (``window`` seconds, 50 ms by default): the first
change after a quiet spell at once, later ones at most one window after the last flush. A
flush broadcasts each changed topic's merged ``presence_diff`` and publishes this node's
changes since the last flush as one delta. The ``presence_state`` a joiner gets is the
topic's as of the last flush, encoded once and shared by every joiner until the topic
changes; a joiner who finds none waits for the next flush. Either way the diffs it gets
next start right where its state ends, and the work of a join does not grow with the room.

It also keeps a mirror of this node's own entries as last acknowledged by the actor, so
that when the supervisor restarts a crashed actor the state is restored with the same
``phx_ref``s and sequence: clients and other nodes see no change, and entries of
channels that ended meanwhile leave with a normal diff. Diffs that were still waiting in
the crashed actor are lost; the topics they belonged to get their whole state broadcast
instead (phoenix.js takes a ``presence_state`` at any time and works out the difference).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import orjson

from switchboard.actors.bridge import ActorTarget, ask
from switchboard.actors.errors import ActorError, ActorTimeoutError, ActorUnavailableError
from switchboard.presence import actor as msg
from switchboard.presence.actor import DIFF_EVENT, Change, Flushed
from switchboard.presence.batch import merge_deltas
from switchboard.presence.state import Delta, Entry
from switchboard.server import codec, eager
from switchboard.server.codec import Frame
from switchboard.server.pubsub import PubSub
from switchboard.server.tasks import stop_tasks

logger = logging.getLogger("switchboard.presence")

REPLICATION_TOPIC = "switchboard:presence"
CONNECTIONS_TOPIC = "connections"
STATE_EVENT = "presence_state"
MAX_CACHED_STATES = 10_000  # topics only ever read would pile up
#: presence_state bytes written per turn of the loop after a flush: in a join storm each
#: joiner's state is the whole room (400 KB for 5000 members), and joins still unanswered
#: wait for the loop meanwhile.
PUSH_BYTES_PER_TURN = 1 << 20


LocalChange = msg.Track | msg.Update | msg.Untrack | msg.UntrackOwner


class _State:
    """A topic's ``presence_state`` JSON as of the last flush, shared by its joiners."""

    __slots__ = ("text", "served")

    def __init__(self, text: str, served: bool) -> None:
        self.text = text
        self.served = served  # by a joiner since it was built: worth building again


def node_name(node: str) -> str:
    """``host:port:bootid`` -> ``host:port``: the part that survives a restart."""
    return node.rsplit(":", 1)[0]


class Presence:
    def __init__(
        self,
        pubsub: PubSub,
        node: str,
        actor: ActorTarget,
        *,
        window: float = 0.05,
        heartbeat: float = 1.0,
        down_after: float = 4.0,
        timeout: float = 2.0,
    ) -> None:
        self.pubsub = pubsub
        self.node = node
        self._actor = actor
        self.window = window
        self.heartbeat = heartbeat
        self.down_after = down_after
        self.timeout = timeout
        self._mirror: dict[str, Entry] = {}
        self._seq = 0  # of the last local change the actor acknowledged
        self._published = 0  # seq of the last local change other nodes were sent
        self._deltas: list[Delta] = []  # acknowledged, not yet published
        self._live_owners: dict[str, int] = {}  # owner -> number of live tracks
        self._queued: list[tuple[LocalChange, asyncio.Future[Any]]] = []
        self._send_soon = False  # _send_queued is due this turn of the loop
        self._send_timer: asyncio.TimerHandle | None = None  # ... or, for later changes, then
        # The window: topics whose diffs wait in the actor, the flush timer, and the states.
        self._dirty: set[str] = set()
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flush_task: asyncio.Task[None] | None = None  # a flush waiting for the actor
        self._flushing = False
        self._last_flush = -math.inf
        self._states: dict[str, _State] = {}
        self._waiters: dict[str, list[tuple[asyncio.Future[None], Callable[[str], None]]]] = {}
        self._resend: set[str] = set()  # topics whose clients need the whole state again
        self.states_shared = 0  # joiners served a state already built
        self.states_awaited = 0  # joiners who waited for a flush to build one
        self._peers: dict[str, float] = {}  # remote node -> monotonic time last heard
        self._available = asyncio.Event()
        self._available.set()
        self._inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=10_000)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.pubsub.subscribe(REPLICATION_TOPIC, self)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._heartbeats()), loop.create_task(self._replication())]
        self._publish("sync_request", {"node": self.node, "target": "*"})

    async def stop(self) -> None:
        self._publish("goodbye", {"node": self.node})
        self.pubsub.unsubscribe(REPLICATION_TOPIC, self)
        for timer in (self._flush_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._flush_timer = self._send_timer = None
        await stop_tasks([*self._tasks, *self._background])
        for waiters in self._waiters.values():
            for waiter, _ in waiters:
                waiter.cancel()
        self._waiters.clear()

    async def settle(self, timeout: float | None = None) -> None:
        """Wait (bounded, by default by the actor timeout: a stuck actor is not waited for)
        until the changes under way are acknowledged, then send the other nodes those not
        sent yet, without waiting for the window. For draining: the local clients are gone,
        so the diffs that wait for the next flush have nobody left to reach."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._send_queued()
        while time.monotonic() < deadline:
            pending = [task for task in self._background if task is not self._flush_task]
            if not pending:
                break
            await asyncio.wait(pending, timeout=deadline - time.monotonic())
        self._publish_deltas()

    # -- what channels call --------------------------------------------------------------

    async def track(
        self, owner: str, topic: str, key: str, meta: Mapping[str, Any], limit: int | None = None
    ) -> bool:
        """Track ``key`` for ``owner``; False if ``limit`` metas of ``key`` exist already."""
        self._live_owners[owner] = self._live_owners.get(owner, 0) + 1
        change = await self._change(msg.Track(owner, topic, key, dict(meta), limit))
        return change is not None

    def track_later(
        self, owner: str, topic: str, key: str, meta: Mapping[str, Any]
    ) -> asyncio.Future[Any]:
        """Track ``key`` for ``owner`` without waiting, for an entry nobody waits on (a socket
        in ``connections``). It costs no hand-off to the actor of its own: it goes with the
        next change that is waited on, or one window later at the latest, in order with the
        owner's other changes. The future fails if the track does."""
        self._live_owners[owner] = self._live_owners.get(owner, 0) + 1
        return self._request(msg.Track(owner, topic, key, dict(meta)), later=True)

    async def update(self, owner: str, topic: str, key: str, meta: Mapping[str, Any]) -> None:
        await self._change(msg.Update(owner, topic, key, dict(meta)))

    async def untrack(self, owner: str, topic: str, key: str) -> None:
        await self._change(msg.Untrack(owner, topic, key))

    async def _change(self, change: LocalChange) -> Any:
        """Make a change of ``change.owner``'s presence; its result once acknowledged.

        The change is queued before this first waits, and queued changes reach the actor in
        order, so a :meth:`forget` that follows can never overtake it. A change whose caller
        stopped waiting is still made and acknowledged: dropping it would leave a presence
        nobody announced. Only the caller's wait is bounded.
        """
        return await self._bounded(self._request(change), "presence did not answer")

    def forget(self, owner: str) -> None:
        """Untrack everything ``owner`` tracked (its channel or socket ended); never waits.

        Queued before this returns, so it comes after every change the owner made before.
        """
        self._live_owners.pop(owner, None)
        self._spawn(self._untrack_owner(owner))

    async def _untrack_owner(self, owner: str) -> None:
        try:
            await self._request(msg.UntrackOwner(owner))
        except ActorError as exc:
            logger.warning("presence of %s not removed yet: %s (restore will drop it)", owner, exc)

    # -- local changes, in order, in batches --------------------------------------------------

    def _request(self, change: LocalChange, later: bool = False) -> asyncio.Future[Any]:
        """Queue ``change``; the changes queued in one turn of the loop go to the actor as one
        message (one thread hand-off for a whole burst of joins), answered in order. A change
        sent ``later`` waits for the next one that is not, or for one window."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._queued.append((change, reply))
        if not later:
            if not self._send_soon:
                self._send_soon = True
                loop.call_soon(self._send_queued)
        elif not self._send_soon and self._send_timer is None:
            self._send_timer = loop.call_later(self.window, self._send_queued)
        return reply

    def _send_queued(self) -> None:
        """Send what is queued now (before any other request, to keep the order)."""
        self._send_soon = False
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self._queued:
            batch, self._queued = self._queued, []
            self._spawn(self._run_batch(batch))

    async def _run_batch(self, batch: list[tuple[LocalChange, asyncio.Future[Any]]]) -> None:
        changes = tuple(change for change, _ in batch)
        try:
            # No time limit: callers that stop waiting still need the change acknowledged.
            results = await self._ask(msg.Batch(changes), timeout=None, send_queued=False)
        except ActorError as exc:
            for change, reply in batch:
                self._failed(change, reply, exc)
            return
        for (change, reply), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                self._failed(change, reply, result)
                continue
            self._acknowledged(change, result)
            if not reply.done():
                reply.set_result(result)

    def _failed(self, change: LocalChange, reply: asyncio.Future[Any], exc: BaseException) -> None:
        if type(change) is msg.Track:
            self._owner_dropped(change.owner, 1)
        if not reply.done():
            reply.set_exception(exc)

    def _acknowledged(self, change: LocalChange, result: Change | None) -> None:
        owner = change.owner
        if result is None:  # a track refused by its limit
            self._owner_dropped(owner, 1)
            return
        self._apply(result)
        kind = type(change)
        if kind is msg.Untrack:
            if result.delta is not None:
                self._owner_dropped(owner, len(result.delta.leaves))
        elif kind is not msg.UntrackOwner and result.delta is not None:
            if owner not in self._live_owners:
                # Forgotten while this was on its way: only possible when both waited for a
                # restarted actor and were sent again in the other order. It leaves at once.
                self._spawn(self._untrack_owner(owner))

    async def push_state(self, topic: str, push: Callable[[str], None]) -> None:
        """Call ``push`` with the topic's ``presence_state`` JSON as of the last flush (at
        once if it is built, else right after the next flush broadcasts its diffs); the
        diffs of the next flushes carry on from it. Call it once subscribed to the topic."""
        state = self._states.get(topic)
        if state is not None:
            state.served = True
            self.states_shared += 1
            push(state.text)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (waiter, push)
        self._waiters.setdefault(topic, []).append(entry)
        self.states_awaited += 1
        self._schedule_flush()
        try:
            await self._bounded(waiter, "presence_state not ready")
        finally:
            waiters = self._waiters.get(topic)
            if waiters is not None and entry in waiters:  # timed out or cancelled
                waiters.remove(entry)
                if not waiters:
                    del self._waiters[topic]

    async def _bounded(self, future: asyncio.Future[Any], what: str) -> Any:
        """Await ``future``, failing it with ActorTimeoutError after the timeout. Whoever
        sets it checks ``done()`` first, so the work behind it carries on regardless."""
        timer = asyncio.get_running_loop().call_later(
            self.timeout, _time_out, future, f"{what} within {self.timeout}s"
        )
        try:
            return await future
        finally:
            timer.cancel()

    async def list(self, topic: str) -> dict[str, Any]:
        return dict(await self._ask(msg.ListTopic(topic)))

    async def summary(self) -> dict[str, Any]:
        return dict(await self._ask(msg.Summary()))

    # -- the actor -------------------------------------------------------------------------

    async def _ask(
        self, message: Any, timeout: float | None | bool = True, send_queued: bool = True
    ) -> Any:
        """Ask the actor, after the changes queued so far; if it is down, wait (bounded) for
        its restart and ask once more."""
        if send_queued:
            self._send_queued()
        limit = self.timeout if timeout is True else timeout
        try:
            return await ask(self._actor, message, timeout=limit)
        except ActorUnavailableError:
            try:
                await asyncio.wait_for(self._wait_available(), self.timeout)
            except TimeoutError:
                raise ActorUnavailableError("presence actor did not come back in time") from None
            return await ask(self._actor, message, timeout=limit)

    async def _wait_available(self) -> None:
        # The supervisor reports the failure on its own thread, possibly after our ask
        # already failed: give its notice a moment to arrive before waiting on the event.
        while True:
            await self._available.wait()
            try:
                return await ask(self._actor, msg.NeedsSync(self.node, 0), timeout=self.timeout)
            except ActorUnavailableError:
                self._available.clear()

    def resync(self) -> None:
        """After a pub/sub outage: announce ourselves and ask every node for a snapshot."""
        self._publish("heartbeat", {"node": self.node, "seq": self._published})
        self._publish("sync_request", {"node": self.node, "target": "*"})

    def actor_failed(self) -> None:
        """The supervisor saw the actor die; asks wait until :meth:`actor_restarted`."""
        self._available.clear()

    async def actor_restarted(self) -> None:
        """Refill a fresh actor from the mirror, then let ended channels' presences leave."""
        entries = tuple(self._mirror.values())
        await ask(self._actor, msg.Restore(entries, self._seq), timeout=self.timeout)
        self._available.set()
        logger.info("presence restored after actor restart: %d local entries", len(entries))
        for owner in {entry.owner for entry in entries} - set(self._live_owners):
            await self._untrack_owner(owner)
        # Diffs that waited in the old actor died with it: those topics' clients get the
        # whole state at the next flush instead. Every cached state is suspect.
        self._resend |= self._dirty
        self._states.clear()
        if self._resend:
            self._schedule_flush()
        self._publish("sync_request", {"node": self.node, "target": "*"})

    def _apply(self, change: Change) -> None:
        delta = change.delta
        if delta is not None:
            for ref in delta.leaves:
                self._mirror.pop(ref, None)
            for entry in delta.joins:
                self._mirror[entry.phx_ref] = entry
            self._seq = delta.seq
            self._deltas.append(delta)
        if change.topics:
            self._dirty |= change.topics
        if delta is not None or change.topics:
            self._schedule_flush()

    # -- the window ------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        """Flush at once after a quiet spell, else one window after the last flush. A flush
        under way already covers every change acknowledged before it returns."""
        if self._flush_timer is not None or self._flushing:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last_flush + self.window - loop.time())
        self._flush_timer = loop.call_later(delay, self._flush_now)

    def _flush_now(self) -> None:
        self._flush_timer = None
        self._flush_task = self._spawn(self._flush())

    async def _flush(self) -> None:
        self._flushing = True
        try:
            self._last_flush = asyncio.get_running_loop().time()
            # Taken now: a change acknowledged while the actor is asked is not in this
            # flush's diffs, so its topic stays dirty for the next one.
            dirty, self._dirty = self._dirty, set()
            hot = {t for t in dirty if (state := self._states.get(t)) and state.served}
            wanted = frozenset(self._waiters.keys() | hot | self._resend)
            try:
                # No time limit: the actor hands its diffs over only once, so the reply
                # must not be dropped. Until it comes, changes gather for the next flush.
                flushed: Flushed = await self._ask(msg.Flush(wanted), timeout=None)
            except ActorError as exc:  # it died: actor_restarted() takes over
                logger.warning("presence diffs not sent: %s", exc)
                self._dirty |= dirty
                return
            finally:
                # Every change acknowledged so far is in the actor's state: one delta.
                self._publish_deltas()
            await self._send_flushed(flushed)
        finally:
            self._flushing = False
        if self._waiters or self._dirty:  # they came while the flush was under way
            self._schedule_flush()

    async def _send_flushed(self, flushed: Flushed) -> None:
        """Broadcast the diffs, then hand each waiting joiner the state after them. The
        next flush waits for this one: until every waiter has its state, no other diff may
        reach it (its channel skips diffs until then)."""
        local_broadcast = self.pubsub.local_broadcast
        states = self._states
        for topic, frames in flushed.frames.items():
            states.pop(topic, None)
            for frame in frames:
                local_broadcast(topic, DIFF_EVENT, frame)
        if len(states) + len(flushed.states) > MAX_CACHED_STATES:
            states.clear()
        written = 0  # state bytes this turn of the loop
        for topic, text in flushed.states.items():
            waiters = self._waiters.pop(topic, ())
            states[topic] = _State(text, served=bool(waiters))
            if topic in self._resend:
                self._resend.discard(topic)
                frame = codec.encode_push_json(None, topic, STATE_EVENT, text)
                local_broadcast(topic, STATE_EVENT, frame)
            for waiter, push in waiters:
                if waiter.done():  # timed out meanwhile
                    continue
                try:
                    push(text)
                except Exception as exc:
                    if not waiter.done():
                        waiter.set_exception(exc)
                else:
                    # Writing the state may have closed that joiner's socket (a slow consumer),
                    # cancelling its wait: the joiners after it still get theirs.
                    if not waiter.done():
                        waiter.set_result(None)
                written += len(text)
                if written >= PUSH_BYTES_PER_TURN:
                    written = 0
                    await asyncio.sleep(0)  # a storm of joiners must not hold the loop

    def _publish_deltas(self) -> None:
        if self._deltas:
            delta = merge_deltas(self._deltas)
            self._deltas = []
            self._published = delta.seq
            self._publish("delta", delta.to_wire())

    def _owner_dropped(self, owner: str, count: int) -> None:
        left = self._live_owners.get(owner, 0) - count
        if left > 0:
            self._live_owners[owner] = left
        else:
            self._live_owners.pop(owner, None)

    # -- replication between nodes -----------------------------------------------------------

    def deliver(self, event: str, frame: Frame) -> None:
        """Replication traffic from other nodes, handled in order by one task."""
        try:
            self._inbox.put_nowait((event, frame))
        except asyncio.QueueFull:
            logger.warning(
                "presence replication inbox full; dropping %s (heartbeats will resync)", event
            )

    def _publish(self, event: str, body: dict[str, Any]) -> None:
        self.pubsub.broadcast_remote(REPLICATION_TOPIC, event, orjson.dumps(body).decode())

    async def _replication(self) -> None:
        while True:
            event, frame = await self._inbox.get()
            try:
                await self._handle_remote(event, orjson.loads(frame))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("presence replication failed on %s", event)

    async def _handle_remote(self, event: str, body: dict[str, Any]) -> None:
        node = str(body["node"])
        if node == self.node:
            return
        if event == "delta":
            self._heard(node)
            self._apply(await self._ask(msg.ApplyDelta(Delta.from_wire(body))))
        elif event == "heartbeat":
            await self._heard_new(node)
            if await self._ask(msg.NeedsSync(node, int(body["seq"]))):
                self._publish("sync_request", {"node": self.node, "target": node})
        elif event == "sync_request":
            await self._heard_new(node)
            if body.get("target") in ("*", self.node):
                entries, seq = await self._ask(msg.Snapshot())
                self._publish_deltas()  # those acknowledged so far, all older than the snapshot
                self._published = max(self._published, seq)
                wire = [entry.to_wire() for entry in entries]
                self._publish("snapshot", {"node": self.node, "seq": seq, "entries": wire})
        elif event == "snapshot":
            await self._heard_new(node)
            entries = tuple(Entry.from_wire(e) for e in body["entries"])
            self._apply(await self._ask(msg.ReplaceNode(node, entries, int(body["seq"]))))
        elif event == "goodbye":
            await self._node_down(node, "left the cluster")

    def _heard(self, node: str) -> None:
        self._peers[node] = time.monotonic()

    async def _heard_new(self, node: str) -> None:
        if node not in self._peers:
            # A restarted node has a new boot id: its old incarnation's entries go at once.
            name = node_name(node)
            for old in [peer for peer in self._peers if node_name(peer) == name]:
                await self._node_down(old, f"restarted as {node}")
        self._heard(node)

    async def _node_down(self, node: str, why: str) -> None:
        self._peers.pop(node, None)
        change = await self._ask(msg.RemoveNode(node))
        if change.topics:
            logger.info("node %s is down (%s); its presences leave", node, why)
        self._apply(change)

    async def _heartbeats(self) -> None:
        while True:
            self._publish("heartbeat", {"node": self.node, "seq": self._published})
            deadline = time.monotonic() - self.down_after
            for node in [n for n, heard in self._peers.items() if heard < deadline]:
                try:
                    await self._node_down(node, f"silent for {self.down_after:.1f} s")
                except ActorError as exc:
                    logger.warning("could not remove node %s yet: %s", node, exc)
            await asyncio.sleep(self.heartbeat)

    def peers(self) -> dict[str, float]:
        """Remote nodes heard from, with seconds since they were last heard."""
        now = time.monotonic()
        return {node: now - heard for node, heard in self._peers.items()}

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[None] | None:
        """Run ``coro`` inline until it first waits; the rest in a task (returned) that
        :meth:`stop` cancels."""
        rest = eager.start(coro)
        if rest is None:
            return None
        task = asyncio.get_running_loop().create_task(_finish(rest))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task


async def _finish(rest: eager.Resumed) -> None:
    await rest


def _time_out(future: asyncio.Future[Any], why: str) -> None:
    if not future.done():
        future.set_exception(ActorTimeoutError(why))
