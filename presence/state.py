"""Presence state of the whole cluster, as a pure data structure.

The counterpart of Phoenix.Tracker.State for a cluster where every node owns
its own entries and replicates them to the other nodes as sequenced deltas
over a pub/sub bus. It does no I/O, uses no threads, asyncio or clocks, so the
tracker around it stays thin and the merge rules can be property-tested.

Every operation returns the Phoenix ``presence_diff`` payloads (per topic) that
local subscribers must see, computed once per node. Metas of a key are kept in
the order this node learnt of them, which is exactly the order a phoenix.js
client reaches by applying those diffs with ``Presence.syncDiff``.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

Meta = dict[str, Any]

_RESERVED = ("phx_ref", "phx_ref_prev")


class PresenceError(ValueError):
    """Base class of the errors raised by local presence operations."""


class AlreadyTrackedError(PresenceError):
    """The (owner, topic, key) triple is already tracked on this node."""


class NotTrackedError(PresenceError):
    """The (owner, topic, key) triple is not tracked on this node."""


def make_ref(node: str, counter: int) -> str:
    """Return the phx_ref for the ``counter``-th ref made by ``node``.

    Deterministic and URL-safe: a 64-bit hash of the node id, then the counter. One node's
    refs differ by counter, and two nodes' refs differ unless their ids' hashes collide,
    which is far less likely than two ids colliding (``host:port:bootid``, the boot id 24
    random bits). Every meta of every presence payload carries its ref: 14 characters
    for a node's first 65,536, where the whole node id made them 40 or more.
    """
    if counter < 0:
        raise ValueError("counter must be >= 0")
    count = counter.to_bytes(max(1, (counter.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(_node_hash(node) + count).rstrip(b"=").decode("ascii")


@functools.lru_cache(maxsize=256)
def _node_hash(node: str) -> bytes:
    return hashlib.blake2b(node.encode(), digest_size=8).digest()


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _clean_meta(meta: Mapping[str, Any]) -> Meta:
    """Deep copy of a user meta without the keys this module owns."""
    return {k: copy.deepcopy(v) for k, v in meta.items() if k not in _RESERVED}


def _str(d: Mapping[str, Any], name: str) -> str:
    value = d.get(name)
    if not isinstance(value, str):
        raise ValueError(f"wire field {name!r} must be a string")
    return value


@dataclass(frozen=True, slots=True)
class Entry:
    """One tracked presence: a meta of ``key`` in ``topic`` owned by ``owner`` on ``node``."""

    node: str
    owner: str
    topic: str
    key: str
    phx_ref: str
    meta: Meta = field(hash=False)
    phx_ref_prev: str | None = None
    _alone_json: str | None = field(default=None, init=False, repr=False, compare=False)

    def presence_meta(self) -> Meta:
        """The meta as Phoenix clients see it: user meta plus phx_ref (and phx_ref_prev)."""
        out = dict(self.meta)
        out["phx_ref"] = self.phx_ref
        if self.phx_ref_prev is not None:
            out["phx_ref_prev"] = self.phx_ref_prev
        return out

    def alone_json(self) -> str:
        """``"key":{"metas":[meta]}``: the entry's part of a state where it is its key's
        only meta (the usual case), encoded the first time only: every state of the topic
        built while the entry lasts lists it (an entry never changes; an update is a new
        one)."""
        text = self._alone_json
        if text is None:
            text = f"{_json(self.key)}:{_json({'metas': [self.presence_meta()]})}"
            object.__setattr__(self, "_alone_json", text)
        return text

    def to_wire(self) -> dict[str, Any]:
        """JSON-able form."""
        wire: dict[str, Any] = {
            "node": self.node,
            "owner": self.owner,
            "topic": self.topic,
            "key": self.key,
            "phx_ref": self.phx_ref,
            "meta": dict(self.meta),
        }
        if self.phx_ref_prev is not None:
            wire["phx_ref_prev"] = self.phx_ref_prev
        return wire

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Entry:
        """Inverse of :meth:`to_wire`; raises ValueError on a malformed value."""
        if not isinstance(d, Mapping):
            raise ValueError("wire entry must be an object")
        meta = d.get("meta")
        if not isinstance(meta, Mapping):
            raise ValueError("wire field 'meta' must be an object")
        prev = d.get("phx_ref_prev")
        if prev is not None and not isinstance(prev, str):
            raise ValueError("wire field 'phx_ref_prev' must be a string")
        return cls(
            node=_str(d, "node"),
            owner=_str(d, "owner"),
            topic=_str(d, "topic"),
            key=_str(d, "key"),
            phx_ref=_str(d, "phx_ref"),
            meta=_clean_meta(meta),
            phx_ref_prev=prev,
        )


@dataclass(frozen=True, slots=True)
class Delta:
    """The change made by one local operation of ``node``, numbered ``seq`` (1, 2, ...).

    ``joins`` are new entries, ``leaves`` the phx_refs of entries of ``node``
    that went away. An empty delta (no-op) carries the node's current seq and
    need not be sent; receivers ignore it anyway.
    """

    node: str
    seq: int
    joins: tuple[Entry, ...] = ()
    leaves: tuple[str, ...] = ()
    #: Set when the delta stands for operations ``first`` .. ``seq`` merged into one
    #: (:func:`~presence.batch.merge_deltas`); None for one operation.
    first: int | None = None

    @property
    def is_empty(self) -> bool:
        """True when the operation changed nothing (nothing to replicate)."""
        return not self.joins and not self.leaves

    @property
    def first_seq(self) -> int:
        """The seq of the first operation this delta stands for."""
        return self.seq if self.first is None else self.first

    def to_wire(self) -> dict[str, Any]:
        """JSON-able form."""
        wire: dict[str, Any] = {
            "node": self.node,
            "seq": self.seq,
            "joins": [e.to_wire() for e in self.joins],
            "leaves": list(self.leaves),
        }
        if self.first is not None:
            wire["first"] = self.first
        return wire

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Delta:
        """Inverse of :meth:`to_wire`; raises ValueError on a malformed value."""
        if not isinstance(d, Mapping):
            raise ValueError("wire delta must be an object")
        seq, first = d.get("seq"), d.get("first")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise ValueError("wire field 'seq' must be an integer")
        if first is not None and (
            not isinstance(first, int) or isinstance(first, bool) or not 0 < first <= seq
        ):
            raise ValueError("wire field 'first' must be an integer from 1 to 'seq'")
        joins, leaves = d.get("joins"), d.get("leaves")
        if not isinstance(joins, list) or not isinstance(leaves, list):
            raise ValueError("wire fields 'joins' and 'leaves' must be arrays")
        if not all(isinstance(r, str) for r in leaves):
            raise ValueError("wire field 'leaves' must hold strings")
        return cls(
            node=_str(d, "node"),
            seq=seq,
            joins=tuple(Entry.from_wire(e) for e in joins),
            leaves=tuple(leaves),
            first=first,
        )


@dataclass(frozen=True, slots=True)
class Diff:
    """The ``presence_diff`` of one topic: key -> metas that joined / left.

    ``vanished`` names the keys whose last meta left (they are gone from the list); it is
    not part of the payload, but tells :class:`~presence.batch.DiffBatch` where merging
    diffs would change the order of keys a client sees.
    """

    joins: dict[str, list[Meta]] = field(default_factory=dict, hash=False)
    leaves: dict[str, list[Meta]] = field(default_factory=dict, hash=False)
    vanished: set[str] = field(default_factory=set, hash=False)

    def to_payload(self) -> dict[str, dict[str, dict[str, list[Meta]]]]:
        """Phoenix payload; both ``joins`` and ``leaves`` are always present."""
        return {
            "joins": {k: {"metas": list(m)} for k, m in self.joins.items()},
            "leaves": {k: {"metas": list(m)} for k, m in self.leaves.items()},
        }


class _DiffBuilder:
    """Collects the joins and leaves of one operation, per topic."""

    def __init__(self) -> None:
        self._topics: dict[str, Diff] = {}

    def _diff(self, topic: str) -> Diff:
        diff = self._topics.get(topic)
        if diff is None:
            diff = self._topics[topic] = Diff()
        return diff

    def join(self, entry: Entry) -> None:
        self._diff(entry.topic).joins.setdefault(entry.key, []).append(entry.presence_meta())

    def leave(self, entry: Entry, vanished: bool) -> None:
        diff = self._diff(entry.topic)
        diff.leaves.setdefault(entry.key, []).append(entry.presence_meta())
        if vanished:
            diff.vanished.add(entry.key)

    def result(self) -> dict[str, Diff]:
        return self._topics


def _check_node(node: str, entries: Iterable[Entry]) -> None:
    for entry in entries:
        if entry.node != node:
            raise ValueError(f"entry of node {entry.node!r} in data of node {node!r}")


class PresenceState:
    """Presences of all nodes as seen by the local node ``node``."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._seq = 0
        self._ref_counter = 0
        # node -> phx_ref -> entry (insertion ordered); always holds the local node.
        self._by_node: dict[str, dict[str, Entry]] = {node: {}}
        # last applied seq of each known remote node.
        self._remote_seq: dict[str, int] = {}
        # topic -> key -> phx_ref -> entry, over all nodes, in arrival order.
        self._topics: dict[str, dict[str, dict[str, Entry]]] = {}
        # local indexes: (owner, topic, key) -> phx_ref and owner -> its (topic, key)s.
        self._local: dict[tuple[str, str, str], str] = {}
        self._owners: dict[str, dict[tuple[str, str], None]] = {}

    @property
    def seq(self) -> int:
        """Seq of the last local operation that changed something (0 at boot)."""
        return self._seq

    # --- internals

    def _insert(self, entry: Entry, diffs: _DiffBuilder) -> None:
        refs = self._by_node.setdefault(entry.node, {})
        if entry.phx_ref in refs:
            return
        refs[entry.phx_ref] = entry
        self._topics.setdefault(entry.topic, {}).setdefault(entry.key, {})[entry.phx_ref] = entry
        diffs.join(entry)

    def _delete(self, node: str, ref: str, diffs: _DiffBuilder) -> None:
        entry = self._by_node.get(node, {}).pop(ref, None)
        if entry is None:
            return
        keys = self._topics[entry.topic]
        metas = keys[entry.key]
        del metas[ref]
        if not metas:
            del keys[entry.key]
            if not keys:
                del self._topics[entry.topic]
        diffs.leave(entry, vanished=not metas)

    def _local_op(
        self, joins: tuple[Entry, ...], leaves: tuple[str, ...]
    ) -> tuple[Delta, dict[str, Diff]]:
        """Apply a local change (joins first, like syncDiff) and number it."""
        diffs = _DiffBuilder()
        for entry in joins:
            self._insert(entry, diffs)
        for ref in leaves:
            self._delete(self.node, ref, diffs)
        self._seq += 1
        return Delta(self.node, self._seq, joins, leaves), diffs.result()

    def _noop(self) -> tuple[Delta, dict[str, Diff]]:
        return Delta(self.node, self._seq), {}

    def _new_entry(
        self, owner: str, topic: str, key: str, meta: Mapping[str, Any], prev: str | None
    ) -> Entry:
        self._ref_counter += 1
        ref = make_ref(self.node, self._ref_counter)
        return Entry(self.node, owner, topic, key, ref, _clean_meta(meta), prev)

    # --- local operations

    def track(
        self, owner: str, topic: str, key: str, meta: Mapping[str, Any]
    ) -> tuple[Delta, dict[str, Diff]]:
        """Track ``key`` in ``topic`` for ``owner``; AlreadyTrackedError if it already is."""
        triple = (owner, topic, key)
        if triple in self._local:
            raise AlreadyTrackedError(f"already tracked: {triple!r}")
        entry = self._new_entry(owner, topic, key, meta, None)
        self._local[triple] = entry.phx_ref
        self._owners.setdefault(owner, {})[(topic, key)] = None
        return self._local_op((entry,), ())

    def update(
        self, owner: str, topic: str, key: str, meta: Mapping[str, Any]
    ) -> tuple[Delta, dict[str, Diff]]:
        """Replace the meta (new phx_ref, ``phx_ref_prev`` = old); NotTrackedError if absent."""
        triple = (owner, topic, key)
        old = self._local.get(triple)
        if old is None:
            raise NotTrackedError(f"not tracked: {triple!r}")
        entry = self._new_entry(owner, topic, key, meta, old)
        self._local[triple] = entry.phx_ref
        return self._local_op((entry,), (old,))

    def untrack(self, owner: str, topic: str, key: str) -> tuple[Delta, dict[str, Diff]]:
        """Stop tracking the triple; an empty delta and no diffs if it is not tracked."""
        ref = self._local.pop((owner, topic, key), None)
        if ref is None:
            return self._noop()
        pairs = self._owners[owner]
        del pairs[(topic, key)]
        if not pairs:
            del self._owners[owner]
        return self._local_op((), (ref,))

    def untrack_owner(self, owner: str) -> tuple[Delta, dict[str, Diff]]:
        """Untrack everything ``owner`` tracks, as one delta."""
        pairs = self._owners.pop(owner, None)
        if not pairs:
            return self._noop()
        refs = tuple(self._local.pop((owner, topic, key)) for topic, key in pairs)
        return self._local_op((), refs)

    def restore(self, entries: Iterable[Entry], seq: int) -> None:
        """Put back this node's own entries after the process holding the state restarted.

        The entries keep their phx_refs and the sequence continues from ``seq``, so clients
        and other nodes see no change at all. Produces no diffs and no delta.
        """
        if self._seq or self._by_node[self.node]:
            raise RuntimeError("restore() is only for a fresh state")
        entries = list(entries)
        _check_node(self.node, entries)
        diffs = _DiffBuilder()
        for entry in entries:
            self._insert(entry, diffs)
            self._local[(entry.owner, entry.topic, entry.key)] = entry.phx_ref
            self._owners.setdefault(entry.owner, {})[(entry.topic, entry.key)] = None
        self._seq = seq
        # Each local operation makes at most one ref, so counting on from seq avoids reuse.
        self._ref_counter = max(self._ref_counter, seq)

    def owners(self) -> set[str]:
        """Owners that track something on this node."""
        return set(self._owners)

    # --- replication

    def apply_delta(self, delta: Delta) -> dict[str, Diff]:
        """Apply a remote node's delta if it is the next one expected from that node (one
        that starts right after the last seq applied; a merged delta may span several).

        Our own deltas, stale or duplicate ones, deltas after a gap and deltas of
        unknown nodes change nothing and return no diffs; for the last two
        :meth:`needs_sync` becomes true. Raises ValueError if an entry belongs to
        another node than the delta.
        """
        last = self._remote_seq.get(delta.node)
        if delta.node == self.node or last is None or delta.first_seq != last + 1:
            return {}
        _check_node(delta.node, delta.joins)
        diffs = _DiffBuilder()
        for entry in delta.joins:
            self._insert(entry, diffs)
        for ref in delta.leaves:
            self._delete(delta.node, ref, diffs)
        self._remote_seq[delta.node] = delta.seq
        return diffs.result()

    def needs_sync(self, node: str, seq: int) -> bool:
        """True if ``node`` is unknown or ``seq`` is beyond what we applied from it."""
        if node == self.node:
            return False
        last = self._remote_seq.get(node)
        return last is None or seq > last

    def replace_node(self, node: str, entries: Iterable[Entry], seq: int) -> dict[str, Diff]:
        """Replace everything of ``node`` by its snapshot taken at ``seq``.

        Entries are matched by phx_ref: kept ones keep their place, new ones are
        appended in snapshot order. A snapshot older than what we already applied
        (and one of our own node) is ignored. Raises ValueError if an entry
        belongs to another node.
        """
        last = self._remote_seq.get(node)
        if node == self.node or (last is not None and seq < last):
            return {}
        incoming = {e.phx_ref: e for e in entries}
        _check_node(node, incoming.values())
        current = self._by_node.setdefault(node, {})
        gone = [ref for ref in current if ref not in incoming]
        diffs = _DiffBuilder()
        for entry in incoming.values():
            self._insert(entry, diffs)
        for ref in gone:
            self._delete(node, ref, diffs)
        self._remote_seq[node] = seq
        return diffs.result()

    def remove_node(self, node: str) -> dict[str, Diff]:
        """Forget a remote node (down or replaced): all its entries leave."""
        if node == self.node or node not in self._remote_seq:
            return {}
        diffs = _DiffBuilder()
        for ref in list(self._by_node[node]):
            self._delete(node, ref, diffs)
        del self._by_node[node]
        del self._remote_seq[node]
        return diffs.result()

    def local_snapshot(self) -> tuple[list[Entry], int]:
        """This node's entries (in tracking order) and its seq, for a full sync."""
        return list(self._by_node[self.node].values()), self._seq

    # --- reading

    def list(self, topic: str) -> dict[str, dict[str, list[Meta]]]:
        """``presence_state`` payload of ``topic`` over all nodes."""
        return {
            key: {"metas": [e.presence_meta() for e in refs.values()]}
            for key, refs in self._topics.get(topic, {}).items()
        }

    def list_json(self, topic: str) -> str:
        """``orjson.dumps(self.list(topic))``, built from each single-meta key's cached JSON
        (:meth:`Entry.alone_json`): a joiner's state costs a string join per member, not a
        dict copy and its encoding. Keys with several metas are encoded afresh."""
        keys = self._topics.get(topic)
        if not keys:
            return "{}"
        parts = []
        for key, refs in keys.items():
            if len(refs) == 1:
                for entry in refs.values():
                    parts.append(entry.alone_json())
            else:
                metas = [entry.presence_meta() for entry in refs.values()]
                parts.append(f"{_json(key)}:{_json({'metas': metas})}")
        return "{" + ",".join(parts) + "}"

    def topics(self) -> dict[str, int]:
        """Topic -> number of present keys."""
        return {topic: len(keys) for topic, keys in self._topics.items()}

    def nodes(self) -> set[str]:
        """Known nodes, the local one included."""
        return set(self._by_node)
