"""The event-loop side of presence: what channels call, and what crosses nodes.

Channels ``track``/``update``/``untrack`` through here; the :class:`~presence.actor.PresenceActor`
holds the state. Diffs go to local subscribers only: each node computes its own from the
same replicated state, so a client gets each diff once, never once per node. Deltas,
heartbeats and snapshots travel between nodes on an internal topic through the pub/sub
backend. This module owns the timing (heartbeats, node-down); the state owns the rules.

It also keeps a mirror of this node's own entries as last acknowledged by the actor, so
that when the supervisor restarts a crashed actor the state is restored with the same
``phx_ref``s and sequence: clients and other nodes see no change, and entries of
channels that ended meanwhile leave with a normal diff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping
from typing import Any

import orjson

from switchboard.actors.bridge import ActorTarget, ask
from switchboard.actors.cache import CacheGet
from switchboard.actors.errors import ActorError, ActorTimeoutError, ActorUnavailableError
from switchboard.presence import actor as msg
from switchboard.presence.actor import Change, state_cache_key
from switchboard.presence.state import Delta, Entry
from switchboard.server import eager
from switchboard.server.codec import Frame
from switchboard.server.pubsub import PubSub
from switchboard.server.tasks import stop_tasks

logger = logging.getLogger("switchboard.presence")

REPLICATION_TOPIC = "switchboard:presence"
CONNECTIONS_TOPIC = "connections"


def node_name(node: str) -> str:
    """``host:port:bootid`` -> ``host:port``: the part that survives a restart."""
    return node.rsplit(":", 1)[0]


class Presence:
    def __init__(
        self,
        pubsub: PubSub,
        node: str,
        actor: ActorTarget,
        cache: ActorTarget | None = None,
        *,
        heartbeat: float = 1.0,
        down_after: float = 4.0,
        timeout: float = 2.0,
    ) -> None:
        self.pubsub = pubsub
        self.node = node
        self._actor = actor
        self._cache = cache
        self.heartbeat = heartbeat
        self.down_after = down_after
        self.timeout = timeout
        self._mirror: dict[str, Entry] = {}
        self._seq = 0
        self._live_owners: dict[str, int] = {}  # owner -> number of live tracks
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
        await stop_tasks([*self._tasks, *self._background])

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for the untracks and changes already under way, e.g. when draining."""
        pending = list(self._background)
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    # -- what channels call --------------------------------------------------------------

    async def track(
        self, owner: str, topic: str, key: str, meta: Mapping[str, Any], limit: int | None = None
    ) -> bool:
        """Track ``key`` for ``owner``; False if ``limit`` metas of ``key`` exist already."""
        self._live_owners[owner] = self._live_owners.get(owner, 0) + 1
        change = await self._change(msg.Track(owner, topic, key, dict(meta), limit))
        return change is not None

    async def update(self, owner: str, topic: str, key: str, meta: Mapping[str, Any]) -> None:
        await self._change(msg.Update(owner, topic, key, dict(meta)))

    async def untrack(self, owner: str, topic: str, key: str) -> None:
        await self._change(msg.Untrack(owner, topic, key))

    async def _change(self, message: msg.Track | msg.Update | msg.Untrack) -> Any:
        """Ask for a change of ``message.owner``'s presence and apply the result.

        The request is in the actor's inbox before this first waits, so a :meth:`forget`
        that follows can never overtake it: the actor handles messages in order. A
        timed-out ask is still handled by the actor later, and dropping its reply would leave
        a presence nobody announced, so the ask runs to completion in the background and only
        the caller's wait is bounded.
        """
        outcome = self._start(self._ask_and_apply(message))
        done, _ = await asyncio.wait({outcome}, timeout=self.timeout)  # runs on if not
        if not done:
            outcome.add_done_callback(_log_late_failure)
            raise ActorTimeoutError(f"presence did not answer within {self.timeout}s")
        return outcome.result()

    async def _ask_and_apply(self, message: msg.Track | msg.Update | msg.Untrack) -> Any:
        change = await self._ask(message, timeout=None)
        owner = message.owner
        if change is None:  # a track refused by its limit
            self._owner_dropped(owner, 1)
            return None
        self._apply(change)
        if type(message) is msg.Untrack:
            if change.delta is not None:
                self._owner_dropped(owner, len(change.delta.leaves))
        elif change.delta is not None and owner not in self._live_owners:
            # Forgotten while this was on its way: only possible when both waited for a
            # restarted actor and were sent again in the other order. It leaves at once.
            self._spawn(self._untrack_owner(owner))
        return change

    def forget(self, owner: str) -> None:
        """Untrack everything ``owner`` tracked (its channel or socket ended); never waits.

        The request reaches the actor before this returns, so it is ordered before
        anything the loop asks afterwards.
        """
        # Sent even if no track was acknowledged yet: one may be in flight, and the actor
        # handles messages in order, so this removes it.
        self._live_owners.pop(owner, None)
        self._spawn(self._untrack_owner(owner))

    async def _untrack_owner(self, owner: str) -> None:
        try:
            self._apply(await self._ask(msg.UntrackOwner(owner), timeout=None))
        except ActorError as exc:
            logger.warning("presence of %s not removed yet: %s (restore will drop it)", owner, exc)

    async def state_payload(self, topic: str) -> str:
        """The topic's ``presence_state`` as JSON text, from the cache when it is fresh."""
        if self._cache is not None:
            try:
                cached = await ask(
                    self._cache, CacheGet(state_cache_key(topic)), timeout=self.timeout
                )
            except ActorError:
                cached = None
            if cached is not None:
                return str(cached)
        return str(await self._ask(msg.EncodedState(topic)))

    async def list(self, topic: str) -> dict[str, Any]:
        return dict(await self._ask(msg.ListTopic(topic)))

    async def summary(self) -> dict[str, Any]:
        return dict(await self._ask(msg.Summary()))

    # -- the actor -------------------------------------------------------------------------

    async def _ask(self, message: Any, timeout: float | None | bool = True) -> Any:
        """Ask the actor; if it is down, wait (bounded) for its restart and ask once more."""
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
        self._publish("heartbeat", {"node": self.node, "seq": self._seq})
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
        self._publish("sync_request", {"node": self.node, "target": "*"})

    def _apply(self, change: Change) -> None:
        local_broadcast = self.pubsub.local_broadcast
        for topic, frame in change.frames.items():
            local_broadcast(topic, "presence_diff", frame)
        delta = change.delta
        if delta is not None:
            for ref in delta.leaves:
                self._mirror.pop(ref, None)
            for entry in delta.joins:
                self._mirror[entry.phx_ref] = entry
            self._seq = delta.seq
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
        if change.frames:
            logger.info("node %s is down (%s); its presences leave", node, why)
        self._apply(change)

    async def _heartbeats(self) -> None:
        while True:
            self._publish("heartbeat", {"node": self.node, "seq": self._seq})
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

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` inline until it first waits; the rest in a task :meth:`settle` awaits."""
        rest = eager.start(coro)
        if rest is not None:
            task = asyncio.get_running_loop().create_task(_finish(rest))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _start(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        """Like :meth:`_spawn`, and return a future of ``coro``'s outcome."""
        outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def run() -> None:
            try:
                outcome.set_result(await coro)
            except asyncio.CancelledError:
                outcome.cancel()
                raise
            except Exception as exc:
                outcome.set_exception(exc)

        self._spawn(run())
        return outcome


async def _finish(rest: eager.Resumed) -> None:
    await rest


def _log_late_failure(outcome: asyncio.Future[Any]) -> None:
    if not outcome.cancelled() and outcome.exception() is not None:
        logger.warning("a presence change nobody waited for failed: %r", outcome.exception())
