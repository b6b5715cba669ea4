"""The actor that owns this node's :class:`~presence.state.PresenceState`.

Every change comes back as the delta to replicate and the ``presence_diff`` frames for
local subscribers, encoded here, off the event loop. The encoded ``presence_state`` of a
topic is built once, kept in the cache actor and served to every joiner until the topic
changes. This actor is the only writer of those cache entries and invalidates them before
it replies, so a joiner can never be served a state older than a diff it missed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from switchboard.actors.bridge import ActorTarget, tell
from switchboard.actors.cache import CacheDelete, CachePut
from switchboard.actors.supervisor import SupervisedActor
from switchboard.presence.state import Delta, Diff, Entry, PresenceState
from switchboard.server import codec

logger = logging.getLogger("switchboard.presence")

DIFF_EVENT = "presence_diff"


def state_cache_key(topic: str) -> str:
    return f"presence_state:{topic}"


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
class EncodedState:
    """The topic's ``presence_state`` payload as JSON text (cached)."""

    topic: str


@dataclass(frozen=True)
class ListTopic:
    topic: str


@dataclass(frozen=True)
class Summary:
    """Topic -> key count, and metas per node in the ``connections`` topic."""


@dataclass(frozen=True)
class Change:
    """What a change means: the delta for other nodes, the diff frames for local subscribers."""

    delta: Delta | None
    frames: dict[str, codec.Frame] = field(default_factory=dict)


class PresenceActor(SupervisedActor):
    def __init__(self, node: str, cache: ActorTarget | None = None) -> None:
        super().__init__()
        self.state = PresenceState(node)
        self._cache = cache
        # The encoded state per topic, valid until the topic changes: joiners whose cache
        # lookups raced each other still share one build.
        self._encoded: dict[str, str] = {}
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
        if kind is EncodedState:
            return self._encoded_state(message.topic)
        if kind is ApplyDelta:
            return self._remote(state.apply_delta(message.delta))
        if kind is ReplaceNode:
            return self._remote(state.replace_node(message.node, message.entries, message.seq))
        if kind is RemoveNode:
            return self._remote(state.remove_node(message.node))
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

    def _local(self, delta: Delta, diffs: dict[str, Diff]) -> Change:
        return Change(None if delta.is_empty else delta, self._frames(diffs))

    def _remote(self, diffs: dict[str, Diff]) -> Change:
        return Change(None, self._frames(diffs))

    def _frames(self, diffs: dict[str, Diff]) -> dict[str, codec.Frame]:
        frames = {}
        for topic, diff in diffs.items():
            self._encoded.pop(topic, None)
            if self._cache is not None:
                tell(self._cache, CacheDelete(state_cache_key(topic), propagate=False))
            frames[topic] = codec.encode_broadcast(topic, DIFF_EVENT, diff.to_payload())
        return frames

    def _encoded_state(self, topic: str) -> str:
        encoded = self._encoded.get(topic)
        if encoded is None:
            if len(self._encoded) > 10_000:  # topics only ever read would pile up
                self._encoded.clear()
            encoded = self._encoded[topic] = orjson.dumps(self.state.list(topic)).decode()
            self.state_builds += 1
            if self._cache is not None:
                tell(self._cache, CachePut(state_cache_key(topic), encoded))
        return encoded

    def _summary(self) -> dict[str, Any]:
        by_node: dict[str, int] = {}
        for presence in self.state.list("connections").values():
            for meta in presence["metas"]:
                node = str(meta.get("node", "?"))
                by_node[node] = by_node.get(node, 0) + 1
        return {
            "topics": self.state.topics(),
            "connections_by_node": by_node,
            "nodes": sorted(self.state.nodes()),
            "state_builds": self.state_builds,
        }
