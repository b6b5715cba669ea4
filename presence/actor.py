"""The actor that owns this node's :class:`~presence.state.PresenceState`.

Every change is applied at once and answered with the delta to replicate (the tracker
publishes them, merged, once per window), while its ``presence_diff`` waits here, merged
with the others of its topic (:class:`~presence.batch.DiffBatch`), until the tracker asks
for a :class:`Flush`. A flush hands over the diff frames, encoded here, off the event
loop, and the ``presence_state`` of the topics the tracker asks for as it stands right
after them: a joiner served that state and then the next diffs sees every change once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from switchboard.actors.supervisor import SupervisedActor
from switchboard.presence.batch import DiffBatch
from switchboard.presence.state import Delta, Diff, Entry, PresenceState
from switchboard.server import codec

logger = logging.getLogger("switchboard.presence")

DIFF_EVENT = "presence_diff"


@dataclass(frozen=True)
class Track:
    owner: str
    topic: str
    key: str
    meta: Mapping[str, Any]
    #: Refuse (reply None) if ``key`` already has this many metas in ``topic`` cluster-wide.
    limit: int | None = None


@dataclass(frozen=True)
class Update:
    owner: str
    topic: str
    key: str
    meta: Mapping[str, Any]


@dataclass(frozen=True)
class Untrack:
    owner: str
    topic: str
    key: str


@dataclass(frozen=True)
class UntrackOwner:
    owner: str


@dataclass(frozen=True)
class Batch:
    """Local changes (:class:`Track`, :class:`Update`, :class:`Untrack`,
    :class:`UntrackOwner`) in the order they were made; answered with a list holding, for
    each, what it alone would be answered with, or the exception it raised."""

    changes: tuple[Any, ...]


@dataclass(frozen=True)
class ApplyDelta:
    delta: Delta


@dataclass(frozen=True)
class ReplaceNode:
    node: str
    entries: tuple[Entry, ...]
    seq: int


@dataclass(frozen=True)
class RemoveNode:
    node: str


@dataclass(frozen=True)
class NeedsSync:
    node: str
    seq: int


@dataclass(frozen=True)
class Snapshot:
    pass


@dataclass(frozen=True)
class Restore:
    entries: tuple[Entry, ...]
    seq: int


@dataclass(frozen=True)
class Flush:
    """Hand over the diffs gathered since the last flush, and the ``presence_state`` JSON of
    ``states`` as it stands after them."""

    states: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ListTopic:
    topic: str


@dataclass(frozen=True)
class Summary:
    """Topic -> key count, and how many presence states were built. Asked on every stats
    tick, so nothing here may cost a topic's size (``connections`` holds every socket)."""


@dataclass(frozen=True)
class Change:
    """What a change means: the delta for other nodes (None if it changed nothing here) and
    the topics whose diffs now wait for the next flush."""

    delta: Delta | None
    topics: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Flushed:
    """Per topic, the ``presence_diff`` frames to broadcast (in order) and the requested
    ``presence_state`` JSON after them. A topic whose changes all cancelled out (a meta
    that came and went) has no frames: its state is what it was."""

    frames: dict[str, list[codec.Frame]] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)


class PresenceActor(SupervisedActor):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.state = PresenceState(node)
        self._pending: dict[str, DiffBatch] = {}
        self.state_builds = 0

    def on_receive(self, message: Any) -> Any:
        state = self.state
        kind = type(message)
        if kind is Track:
            if message.limit is not None:
                metas = state.list(message.topic).get(message.key, {}).get("metas", ())
                if len(metas) >= message.limit:
                    return None
            return self._local(
                *state.track(message.owner, message.topic, message.key, message.meta)
            )
        if kind is Untrack:
            return self._local(*state.untrack(message.owner, message.topic, message.key))
        if kind is UntrackOwner:
            return self._local(*state.untrack_owner(message.owner))
        if kind is Update:
            return self._local(
                *state.update(message.owner, message.topic, message.key, message.meta)
            )
        if kind is Batch:
            return [self._one(change) for change in message.changes]
        if kind is Flush:
            return self._flush(message.states)
        if kind is ApplyDelta:
            return self._gather(None, state.apply_delta(message.delta))
        if kind is ReplaceNode:
            return self._gather(
                None, state.replace_node(message.node, message.entries, message.seq)
            )
        if kind is RemoveNode:
            return self._gather(None, state.remove_node(message.node))
        if kind is NeedsSync:
            return state.needs_sync(message.node, message.seq)
        if kind is Snapshot:
            return state.local_snapshot()
        if kind is Restore:
            state.restore(message.entries, message.seq)
            return None
        if kind is ListTopic:
            return state.list(message.topic)
        if kind is Summary:
            return self._summary()
        return super().on_receive(message)

    def _one(self, change: Any) -> Any:
        try:
            return self.on_receive(change)
        except Exception as exc:  # the caller of that change gets it, not the whole batch
            return exc

    def _local(self, delta: Delta, diffs: dict[str, Diff]) -> Change:
        return self._gather(None if delta.is_empty else delta, diffs)

    def _gather(self, delta: Delta | None, diffs: dict[str, Diff]) -> Change:
        pending = self._pending
        for topic, diff in diffs.items():
            batch = pending.get(topic)
            if batch is None:
                batch = pending[topic] = DiffBatch()
            batch.add(diff)
        return Change(delta, frozenset(diffs))

    def _flush(self, states: frozenset[str]) -> Flushed:
        pending, self._pending = self._pending, {}
        flushed = Flushed()
        for topic, batch in pending.items():
            frames = [
                codec.encode_broadcast(topic, DIFF_EVENT, diff.to_payload())
                for diff in batch.diffs()
            ]
            if frames:
                flushed.frames[topic] = frames
        for topic in states:
            flushed.states[topic] = self.state.list_json(topic)
        self.state_builds += len(states)
        return flushed

    def _summary(self) -> dict[str, Any]:
        return {"topics": self.state.topics(), "state_builds": self.state_builds}
