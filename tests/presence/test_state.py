"""Tests of the pure presence state (presence.state)."""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import ANY

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.presence.state import (
    AlreadyTrackedError,
    Delta,
    Diff,
    Entry,
    NotTrackedError,
    PresenceState,
    make_ref,
)

FAST = settings(max_examples=120, deadline=None, derandomize=True, database=None)

Lists = dict[str, dict[str, Any]]


# --- helpers


def sync_diff(state: Lists, diff: dict[str, Any]) -> Lists:
    """Python port of phoenix.js Presence.syncDiff (without callbacks)."""
    state = copy.deepcopy(state)
    for key, new_presence in diff["joins"].items():
        current = state.get(key)
        state[key] = copy.deepcopy(new_presence)
        if current is not None:
            joined = [m["phx_ref"] for m in state[key]["metas"]]
            kept = [m for m in current["metas"] if m["phx_ref"] not in joined]
            state[key]["metas"][0:0] = kept
    for key, left_presence in diff["leaves"].items():
        current = state.get(key)
        if current is None:
            continue
        left = [m["phx_ref"] for m in left_presence["metas"]]
        current["metas"] = [m for m in current["metas"] if m["phx_ref"] not in left]
        if not current["metas"]:
            del state[key]
    return state


def wire(delta: Delta) -> Delta:
    """Send a delta through JSON, as the bus does."""
    return Delta.from_wire(json.loads(json.dumps(delta.to_wire())))


def snapshot_wire(state: PresenceState) -> tuple[list[Entry], int]:
    entries, seq = state.local_snapshot()
    data = json.loads(json.dumps([e.to_wire() for e in entries]))
    return [Entry.from_wire(e) for e in data], seq


def payload(diff: Diff) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(diff.to_payload()))
    return result


def all_lists(state: PresenceState, topics: list[str]) -> dict[str, Lists]:
    return {t: state.list(t) for t in topics}


def canonical(lists: dict[str, Lists]) -> dict[str, dict[str, list[str]]]:
    """Lists with metas sorted, for comparing nodes that learnt things in another order."""
    return {
        t: {k: sorted(json.dumps(m, sort_keys=True) for m in v["metas"]) for k, v in keys.items()}
        for t, keys in lists.items()
    }


def assert_same_ordered(a: Lists, b: Lists) -> None:
    assert a == b
    assert list(a) == list(b)


def introduce(states: list[PresenceState]) -> None:
    """Every node learns every other node's (empty) snapshot, as after boot."""
    for receiver in states:
        for sender in states:
            if sender is not receiver:
                receiver.replace_node(sender.node, *snapshot_wire(sender))


# --- unit tests: local operations


def test_tracking_returns_a_delta_and_a_join_diff() -> None:
    state = PresenceState("n1:a")
    delta, diffs = state.track("s1/1", "room:lobby", "u1", {"online_at": "1"})
    assert delta.node == "n1:a"
    assert delta.seq == 1
    assert delta.leaves == ()
    [entry] = delta.joins
    assert (entry.owner, entry.topic, entry.key) == ("s1/1", "room:lobby", "u1")
    meta = {"online_at": "1", "phx_ref": entry.phx_ref}
    assert diffs["room:lobby"].to_payload() == {"joins": {"u1": {"metas": [meta]}}, "leaves": {}}
    assert state.list("room:lobby") == {"u1": {"metas": [meta]}}


def test_tracking_the_same_triple_twice_is_an_error() -> None:
    state = PresenceState("n1:a")
    state.track("s1/1", "room:lobby", "u1", {})
    with pytest.raises(AlreadyTrackedError):
        state.track("s1/1", "room:lobby", "u1", {})
    assert issubclass(AlreadyTrackedError, ValueError)
    assert state.seq == 1


def test_the_same_key_from_two_owners_gives_two_metas_in_tracking_order() -> None:
    state = PresenceState("n1:a")
    first = state.track("s1/1", "t", "u1", {"n": 1})[0].joins[0].phx_ref
    second = state.track("s2/1", "t", "u1", {"n": 2})[0].joins[0].phx_ref
    state.track("s2/1", "t", "u0", {"n": 3})
    listed = state.list("t")
    assert list(listed) == ["u1", "u0"]
    assert [m["phx_ref"] for m in listed["u1"]["metas"]] == [first, second]
    assert state.topics() == {"t": 2}


def test_tracking_ignores_reserved_keys_and_copies_the_meta() -> None:
    state = PresenceState("n1:a")
    meta: dict[str, Any] = {"phx_ref": "fake", "phx_ref_prev": "x", "tags": ["a"]}
    delta, _ = state.track("o", "t", "k", meta)
    meta["tags"].append("b")
    [listed] = state.list("t")["k"]["metas"]
    assert listed == {"tags": ["a"], "phx_ref": delta.joins[0].phx_ref}


def test_update_is_one_diff_with_the_old_meta_leaving_and_the_new_joining() -> None:
    state = PresenceState("n1:a")
    old_delta, _ = state.track("o", "t", "u1", {"status": "away"})
    old_ref = old_delta.joins[0].phx_ref
    delta, diffs = state.update("o", "t", "u1", {"status": "here"})
    new_ref = delta.joins[0].phx_ref
    assert delta.seq == 2
    assert delta.leaves == (old_ref,)
    assert new_ref != old_ref
    new_meta = {"status": "here", "phx_ref": new_ref, "phx_ref_prev": old_ref}
    assert diffs["t"].to_payload() == {
        "joins": {"u1": {"metas": [new_meta]}},
        "leaves": {"u1": {"metas": [{"status": "away", "phx_ref": old_ref}]}},
    }
    assert state.list("t") == {"u1": {"metas": [new_meta]}}


def test_updating_an_untracked_triple_is_an_error() -> None:
    state = PresenceState("n1:a")
    with pytest.raises(NotTrackedError):
        state.update("o", "t", "u1", {})
    assert state.seq == 0


def test_untrack_removes_one_meta_and_reports_it_as_a_leave() -> None:
    state = PresenceState("n1:a")
    ref = state.track("o", "t", "u1", {"a": 1})[0].joins[0].phx_ref
    state.track("o", "t", "u2", {})
    delta, diffs = state.untrack("o", "t", "u1")
    assert (delta.seq, delta.joins, delta.leaves) == (3, (), (ref,))
    assert diffs["t"].to_payload() == {
        "joins": {},
        "leaves": {"u1": {"metas": [{"a": 1, "phx_ref": ref}]}},
    }
    assert list(state.list("t")) == ["u2"]


def test_untrack_after_update_removes_the_updated_meta() -> None:
    state = PresenceState("n1:a")
    state.track("o", "t", "u1", {"v": 1})
    new_ref = state.update("o", "t", "u1", {"v": 2})[0].joins[0].phx_ref
    delta, diffs = state.untrack("o", "t", "u1")
    assert delta.leaves == (new_ref,)
    assert diffs["t"].leaves == {"u1": [{"v": 2, "phx_ref": new_ref, "phx_ref_prev": ANY}]}
    assert state.list("t") == {}
    assert state.local_snapshot() == ([], 3)


def test_untracking_something_not_tracked_is_a_noop() -> None:
    state = PresenceState("n1:a")
    state.track("o", "t", "u1", {})
    delta, diffs = state.untrack("o", "t", "u2")
    assert delta.is_empty
    assert delta.seq == 1
    assert diffs == {}
    assert state.seq == 1


def test_untrack_owner_removes_all_its_topics_and_keys_in_one_delta() -> None:
    state = PresenceState("n1:a")
    state.track("o", "t1", "u1", {})
    state.track("o", "t2", "u1", {})
    kept = state.track("other", "t1", "u1", {})[0].joins[0].phx_ref
    delta, diffs = state.untrack_owner("o")
    assert delta.seq == 4
    assert len(delta.leaves) == 2
    assert set(diffs) == {"t1", "t2"}
    assert diffs["t2"].to_payload()["joins"] == {}
    assert [m["phx_ref"] for m in state.list("t1")["u1"]["metas"]] == [kept]
    assert state.list("t2") == {}
    assert state.topics() == {"t1": 1}
    assert state.untrack_owner("o")[0].is_empty
    state.track("o", "t1", "u1", {})  # the owner can track again afterwards


def test_empty_topics_disappear() -> None:
    state = PresenceState("n1:a")
    state.track("o", "t", "u1", {})
    state.untrack("o", "t", "u1")
    assert state.topics() == {}
    assert state.list("t") == {}


# --- unit tests: replication


def test_a_remote_delta_is_applied_and_returns_the_same_diff() -> None:
    a, b = PresenceState("a:1"), PresenceState("b:1")
    introduce([a, b])
    delta, local_diffs = a.track("o", "t", "u1", {"x": 1})
    remote_diffs = b.apply_delta(wire(delta))
    assert {t: d.to_payload() for t, d in remote_diffs.items()} == {
        t: d.to_payload() for t, d in local_diffs.items()
    }
    assert b.list("t") == a.list("t")
    assert b.nodes() == {"a:1", "b:1"}
    assert not b.needs_sync("a:1", 1)


def test_a_remote_update_is_one_diff_on_the_other_node_too() -> None:
    a, b = PresenceState("a:1"), PresenceState("b:1")
    introduce([a, b])
    b.apply_delta(wire(a.track("o", "t", "u1", {"v": 1})[0]))
    delta, local_diffs = a.update("o", "t", "u1", {"v": 2})
    diffs = b.apply_delta(wire(delta))
    assert diffs["t"].to_payload() == local_diffs["t"].to_payload()
    assert b.list("t") == a.list("t")


def test_our_own_delta_is_ignored() -> None:
    a = PresenceState("a:1")
    delta, _ = a.track("o", "t", "u1", {})
    assert a.apply_delta(delta) == {}
    assert len(a.list("t")["u1"]["metas"]) == 1
    assert not a.needs_sync("a:1", 99)


def test_a_delta_from_an_unknown_node_is_not_applied_and_asks_for_a_sync() -> None:
    a, b = PresenceState("a:1"), PresenceState("b:1")
    delta, _ = a.track("o", "t", "u1", {})
    assert b.needs_sync("a:1", 0)
    assert b.apply_delta(delta) == {}
    assert b.list("t") == {}
    assert b.needs_sync("a:1", delta.seq)
    diffs = b.replace_node("a:1", *a.local_snapshot())
    assert set(diffs) == {"t"}
    assert b.list("t") == a.list("t")
    assert not b.needs_sync("a:1", a.seq)


def test_a_gap_in_the_sequence_is_not_applied_and_asks_for_a_sync() -> None:
    a, b = PresenceState("a:1"), PresenceState("b:1")
    introduce([a, b])
    a.track("o", "t", "u1", {})
    second, _ = a.track("o", "t", "u2", {})
    assert b.apply_delta(second) == {}
    assert b.list("t") == {}
    assert b.needs_sync("a:1", second.seq)


def test_a_duplicate_or_stale_delta_is_ignored_without_asking_for_a_sync() -> None:
    a, b = PresenceState("a:1"), PresenceState("b:1")
    introduce([a, b])
    first, _ = a.track("o", "t", "u1", {})
    assert b.apply_delta(first)
    assert b.apply_delta(first) == {}
    assert not b.needs_sync("a:1", first.seq)
    assert len(b.list("t")["u1"]["metas"]) == 1


def test_an_empty_delta_is_ignored() -> None:
    a, b = PresenceState("a:1"), PresenceState("b:1")
    introduce([a, b])
    b.apply_delta(a.track("o", "t", "u1", {})[0])
    noop, _ = a.untrack("o", "t", "nobody")
    assert b.apply_delta(noop) == {}
    assert not b.needs_sync("a:1", noop.seq)


def test_replace_node_reports_only_what_changed() -> None:
    a, b = PresenceState("a:1"), PresenceState("b:1")
    introduce([a, b])
    b.apply_delta(a.track("o", "t", "stays", {})[0])
    b.apply_delta(a.track("o", "t", "goes", {})[0])
    a.untrack("o", "t", "goes")
    a.track("o", "t", "comes", {})
    diffs = b.replace_node("a:1", *snapshot_wire(a))
    out = diffs["t"].to_payload()
    assert list(out["joins"]) == ["comes"]
    assert list(out["leaves"]) == ["goes"]
    assert b.list("t") == a.list("t")
    assert b.replace_node("a:1", *a.local_snapshot()) == {}


def test_a_snapshot_older_than_what_we_applied_is_ignored() -> None:
    a, b = PresenceState("a:1"), PresenceState("b:1")
    introduce([a, b])
    old = a.local_snapshot()
    b.apply_delta(a.track("o", "t", "u1", {})[0])
    assert b.replace_node("a:1", *old) == {}
    assert "u1" in b.list("t")


def test_replace_node_rejects_entries_of_another_node() -> None:
    a, b = PresenceState("a:1"), PresenceState("b:1")
    a.track("o", "t", "u1", {})
    with pytest.raises(ValueError):
        b.replace_node("c:1", *a.local_snapshot())
    assert b.nodes() == {"b:1"}


def test_remove_node_makes_all_its_entries_leave() -> None:
    a, b = PresenceState("a:1"), PresenceState("b:1")
    introduce([a, b])
    b.track("o", "t", "u1", {})
    b.apply_delta(a.track("o", "t", "u1", {})[0])
    b.apply_delta(a.track("o", "t2", "u2", {})[0])
    diffs = b.remove_node("a:1")
    assert set(diffs) == {"t", "t2"}
    assert len(b.list("t")["u1"]["metas"]) == 1
    assert b.list("t2") == {}
    assert b.nodes() == {"b:1"}
    assert b.needs_sync("a:1", 0)
    assert b.remove_node("a:1") == {}


def test_the_local_node_cannot_be_replaced_or_removed() -> None:
    a = PresenceState("a:1")
    a.track("o", "t", "u1", {})
    assert a.remove_node("a:1") == {}
    assert a.replace_node("a:1", [], 5) == {}
    assert "u1" in a.list("t")


def test_entries_and_deltas_round_trip_through_json() -> None:
    a = PresenceState("a:1")
    a.track("o", "t", "u1", {"nested": {"x": [1, 2]}})
    delta, _ = a.update("o", "t", "u1", {"v": None})
    assert wire(delta) == delta
    entries, _ = a.local_snapshot()
    assert snapshot_wire(a)[0] == entries


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"node": "a", "seq": "1", "joins": [], "leaves": []},
        {"node": "a", "seq": True, "joins": [], "leaves": []},
        {"node": "a", "seq": 1, "joins": [{"node": "a"}], "leaves": []},
        {"node": "a", "seq": 1, "joins": [], "leaves": [1]},
        {"node": 1, "seq": 1, "joins": [], "leaves": []},
    ],
)
def test_malformed_wire_deltas_raise_value_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Delta.from_wire(bad)


def test_diff_payload_always_has_joins_and_leaves() -> None:
    assert Diff().to_payload() == {"joins": {}, "leaves": {}}


def test_refs_are_url_safe_and_differ_between_nodes_and_counters() -> None:
    refs = {make_ref(node, n) for node in ("a:1", "a:2", "b:1") for n in range(300)}
    assert len(refs) == 900
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", r) for r in refs)
    assert make_ref("a:1", 7) == make_ref("a:1", 7)


def test_a_ref_is_short_whatever_the_node_id_since_every_meta_on_the_wire_carries_one() -> None:
    node = "switchboard-node-17.internal.example:4000:9f3a2c"
    assert all(len(make_ref(node, n)) <= 14 for n in (0, 1, 255, 256, 65_535))


# --- property-based tests: a small simulated cluster

OWNERS = ["s1/1", "s2/1", "s2/2"]
TOPICS = ["room:a", "room:b"]
KEYS = ["1", "u1", "u2"]
NODE_IDS = ["a:1", "b:2", "c:3"]

metas = st.dictionaries(st.sampled_from(["v", "w"]), st.integers(0, 3), max_size=2)
local_ops = st.one_of(
    st.tuples(
        st.just("track"),
        st.sampled_from(OWNERS),
        st.sampled_from(TOPICS),
        st.sampled_from(KEYS),
        metas,
    ),
    st.tuples(
        st.just("update"),
        st.sampled_from(OWNERS),
        st.sampled_from(TOPICS),
        st.sampled_from(KEYS),
        metas,
    ),
    st.tuples(
        st.just("untrack"), st.sampled_from(OWNERS), st.sampled_from(TOPICS), st.sampled_from(KEYS)
    ),
    st.tuples(st.just("untrack_owner"), st.sampled_from(OWNERS)),
)


@dataclass
class Cluster:
    """Node states, a FIFO link per (sender, receiver) and a phoenix.js client view per node."""

    states: list[PresenceState]
    links: dict[tuple[int, int], list[Delta]] = field(default_factory=dict)
    tracked: list[set[tuple[str, str, str]]] = field(default_factory=list)
    views: list[dict[str, Lists]] = field(default_factory=list)

    @classmethod
    def boot(cls, size: int) -> Cluster:
        cluster = cls([PresenceState(n) for n in NODE_IDS[:size]])
        introduce(cluster.states)
        cluster.links = {(s, r): [] for s in range(size) for r in range(size) if s != r}
        cluster.tracked = [set() for _ in range(size)]
        cluster.views = [all_lists(s, TOPICS) for s in cluster.states]
        return cluster

    def see(self, index: int, diffs: dict[str, Diff]) -> None:
        """Feed diffs to node ``index``'s client view and check it matches the state."""
        state = self.states[index]
        for topic, diff in diffs.items():
            assert diff.joins or diff.leaves
            self.views[index][topic] = sync_diff(self.views[index][topic], payload(diff))
        for topic in TOPICS:
            assert_same_ordered(self.views[index][topic], state.list(topic))

    def local(self, index: int, op: tuple[Any, ...]) -> None:
        """Run a local op on node ``index``, checking errors against a model."""
        state, tracked = self.states[index], self.tracked[index]
        name, owner = op[0], op[1]
        seq = state.seq
        if name == "track":
            if op[1:4] in tracked:
                with pytest.raises(AlreadyTrackedError):
                    state.track(*op[1:])
                return
            tracked.add(op[1:4])
            delta, diffs = state.track(*op[1:])
        elif name == "update":
            if op[1:4] not in tracked:
                with pytest.raises(NotTrackedError):
                    state.update(*op[1:])
                return
            delta, diffs = state.update(*op[1:])
        elif name == "untrack":
            expect_change = op[1:4] in tracked
            tracked.discard(op[1:4])
            delta, diffs = state.untrack(*op[1:])
            assert delta.is_empty != expect_change
        else:
            expect_change = any(t[0] == owner for t in tracked)
            tracked.difference_update({t for t in tracked if t[0] == owner})
            delta, diffs = state.untrack_owner(owner)
            assert delta.is_empty != expect_change
        assert delta.seq == (seq if delta.is_empty else seq + 1)
        entries, _ = state.local_snapshot()
        assert sorted((e.owner, e.topic, e.key) for e in entries) == sorted(tracked)
        self.see(index, diffs)
        if not delta.is_empty:
            for (s, _), queue in self.links.items():
                if s == index:
                    queue.append(wire(delta))

    def deliver(self, sender: int, receiver: int) -> None:
        queue = self.links.get((sender, receiver))
        if queue:
            self.see(receiver, self.states[receiver].apply_delta(queue.pop(0)))

    def deliver_all(self) -> None:
        for (s, r), queue in self.links.items():
            while queue:
                self.deliver(s, r)

    def canonical_lists(self, index: int) -> dict[str, dict[str, list[str]]]:
        return canonical(all_lists(self.states[index], TOPICS))

    def step(self, op: tuple[Any, ...]) -> None:
        """One of ``faulty_ops``: a local op, or a delta delivered or lost, a full resync or
        a removal of one node at another."""
        size = len(self.states)
        if op[0] == "local":
            self.local(op[1] % size, op[2])
            return
        sender, receiver = op[1] % size, op[2] % size
        if sender == receiver:
            return
        state, other = self.states[receiver], self.states[sender]
        if op[0] == "deliver":
            self.deliver(sender, receiver)
        elif op[0] == "drop":
            queue = self.links[(sender, receiver)]
            if queue:
                queue.pop(0)
        elif op[0] == "resync":
            self.see(receiver, state.replace_node(other.node, *snapshot_wire(other)))
        else:
            self.see(receiver, state.remove_node(other.node))


cluster_ops = st.one_of(
    st.tuples(st.just("local"), st.integers(0, 2), local_ops),
    st.tuples(st.just("deliver"), st.integers(0, 2), st.integers(0, 2)),
)


@FAST
@given(size=st.integers(2, 3), ops=st.lists(cluster_ops, max_size=40))
def test_nodes_converge_when_deltas_are_delivered_in_order(size: int, ops: list[Any]) -> None:
    cluster = Cluster.boot(size)
    for op in ops:
        if op[0] == "local":
            cluster.local(op[1] % size, op[2])
        else:
            cluster.deliver(op[1] % size, op[2] % size)
    cluster.deliver_all()
    expected = cluster.canonical_lists(0)
    for index in range(1, size):
        assert cluster.canonical_lists(index) == expected
    for state in cluster.states:
        assert all(not state.needs_sync(other.node, other.seq) for other in cluster.states)
    # every node holds exactly the model's tracked triples
    present = Counter(
        (t, k) for t in TOPICS for k, v in cluster.states[0].list(t).items() for _ in v["metas"]
    )
    assert present == Counter((t, k) for tracked in cluster.tracked for _, t, k in tracked)


@FAST
@given(ops=st.lists(local_ops, max_size=40), cut=st.integers(0, 40))
def test_a_full_sync_gives_the_same_lists_as_applying_all_deltas(ops: list[Any], cut: int) -> None:
    cluster = Cluster.boot(2)
    source = cluster.states[0]
    for op in ops:
        cluster.local(0, op)
    deltas = cluster.links[(0, 1)]

    by_deltas = cluster.states[1]
    for delta in deltas:
        by_deltas.apply_delta(delta)
    expected = all_lists(by_deltas, TOPICS)
    assert all_lists(source, TOPICS) == expected

    fresh = PresenceState("b:2")
    fresh.replace_node(source.node, *snapshot_wire(source))
    assert all_lists(fresh, TOPICS) == expected

    partial = PresenceState("c:3")
    partial.replace_node(source.node, [], 0)
    for delta in deltas[:cut]:
        partial.apply_delta(delta)
    view = all_lists(partial, TOPICS)
    diffs = partial.replace_node(source.node, *snapshot_wire(source))
    for topic, diff in diffs.items():
        view[topic] = sync_diff(view[topic], payload(diff))
    for topic in TOPICS:
        assert_same_ordered(partial.list(topic), expected[topic])
        assert_same_ordered(view[topic], expected[topic])

    assert by_deltas.replace_node(source.node, *source.local_snapshot()) == {}


faulty_ops = st.one_of(
    st.tuples(st.just("local"), st.integers(0, 2), local_ops),
    st.tuples(st.just("deliver"), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("drop"), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("resync"), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("remove"), st.integers(0, 2), st.integers(0, 2)),
)


@FAST
@given(size=st.integers(2, 3), ops=st.lists(faulty_ops, max_size=50))
def test_client_views_built_from_diffs_always_equal_the_lists(size: int, ops: list[Any]) -> None:
    """Diff soundness, with lost deltas, resyncs and removed nodes thrown in."""
    cluster = Cluster.boot(size)
    for op in ops:
        cluster.step(op)
    # heal: a full sync of every node everywhere makes everything converge again
    cluster.links = {link: [] for link in cluster.links}
    for receiver, state in enumerate(cluster.states):
        for other in cluster.states:
            if state.needs_sync(other.node, other.seq):
                cluster.see(receiver, state.replace_node(other.node, *snapshot_wire(other)))
    expected = cluster.canonical_lists(0)
    assert all(cluster.canonical_lists(i) == expected for i in range(size))


@FAST
@given(size=st.integers(2, 3), ops=st.lists(cluster_ops, max_size=40), pick=st.integers(0, 2))
def test_removing_a_node_removes_exactly_its_entries(size: int, ops: list[Any], pick: int) -> None:
    cluster = Cluster.boot(size)
    for op in ops:
        if op[0] == "local":
            cluster.local(op[1] % size, op[2])
        else:
            cluster.deliver(op[1] % size, op[2] % size)
    cluster.deliver_all()
    receiver = cluster.states[0]
    gone = cluster.states[1 + pick % (size - 1)]
    gone_entries, _ = gone.local_snapshot()
    gone_refs = {e.phx_ref for e in gone_entries}
    before = all_lists(receiver, TOPICS)

    diffs = receiver.remove_node(gone.node)

    left = Counter(
        (topic, key, json.dumps(m, sort_keys=True))
        for topic, diff in diffs.items()
        for key, ms in diff.leaves.items()
        for m in ms
    )
    assert left == Counter(
        (e.topic, e.key, json.dumps(e.presence_meta(), sort_keys=True)) for e in gone_entries
    )
    assert all(not diff.joins for diff in diffs.values())
    for topic in TOPICS:
        remaining = receiver.list(topic)
        refs = {m["phx_ref"] for v in remaining.values() for m in v["metas"]}
        assert not refs & gone_refs
        kept = {
            k: {"metas": [m for m in v["metas"] if m["phx_ref"] not in gone_refs]}
            for k, v in before[topic].items()
        }
        assert remaining == {k: v for k, v in kept.items() if v["metas"]}
    assert gone.node not in receiver.nodes()


@FAST
@given(size=st.integers(2, 3), ops=st.lists(cluster_ops, max_size=40))
def test_phx_refs_are_unique_across_all_nodes(size: int, ops: list[Any]) -> None:
    cluster = Cluster.boot(size)
    for op in ops:
        if op[0] == "local":
            cluster.local(op[1] % size, op[2])
        else:
            cluster.deliver(op[1] % size, op[2] % size)
    refs = [e.phx_ref for s in cluster.states for e in s.local_snapshot()[0]]
    assert len(refs) == len(set(refs))
    for state in cluster.states:
        listed = [m["phx_ref"] for t in TOPICS for v in state.list(t).values() for m in v["metas"]]
        assert len(listed) == len(set(listed))


@FAST
@given(
    a=st.tuples(st.text(max_size=8), st.integers(0, 2**70)),
    b=st.tuples(st.text(max_size=8), st.integers(0, 2**70)),
)
def test_refs_differ_whenever_node_or_counter_does_and_are_url_safe(
    a: tuple[str, int], b: tuple[str, int]
) -> None:
    assert (make_ref(*a) == make_ref(*b)) == (a == b)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", make_ref(*a))


@FAST
@given(ops=st.lists(local_ops, min_size=2, max_size=30), data=st.data())
def test_a_missed_delta_leaves_the_state_unchanged_and_asks_for_a_sync(
    ops: list[Any], data: st.DataObject
) -> None:
    cluster = Cluster.boot(2)
    for op in ops:
        cluster.local(0, op)
    deltas = cluster.links[(0, 1)]
    if len(deltas) < 2:
        return
    missed = data.draw(st.integers(0, len(deltas) - 2), label="missed")
    receiver, source = cluster.states[1], cluster.states[0]
    for delta in deltas[:missed]:
        receiver.apply_delta(delta)
    before = all_lists(receiver, TOPICS)
    for delta in deltas[missed + 1 :]:
        assert receiver.apply_delta(delta) == {}
        assert receiver.needs_sync(source.node, delta.seq)
        assert all_lists(receiver, TOPICS) == before
    receiver.replace_node(source.node, *snapshot_wire(source))
    assert all_lists(receiver, TOPICS) == all_lists(source, TOPICS)
    assert not receiver.needs_sync(source.node, source.seq)


@FAST
@given(size=st.integers(2, 3), ops=st.lists(faulty_ops, max_size=50))
def test_the_state_joiners_are_sent_is_the_list_byte_for_byte(size: int, ops: list[Any]) -> None:
    """``list_json`` builds it from each entry's meta JSON, cached the first time it is
    listed: after every operation it must still be exactly the list, encoded."""
    cluster = Cluster.boot(size)
    for op in ops:
        cluster.step(op)
        for state in cluster.states:
            for topic in TOPICS:
                assert state.list_json(topic) == orjson.dumps(state.list(topic)).decode()


def test_the_state_json_escapes_keys_and_metas_like_the_list() -> None:
    state = PresenceState("a:1")
    odd = ['he said "hi"', "back\\slash", "ünï\u2028code", "<\x01>", ""]
    for n, key in enumerate(odd):
        state.track(f"s{n}", "room:odd", key, {"name": key, "nested": {"k": [key, None, 1.5]}})
    state.track("s9", "room:odd", odd[0], {"second": True})  # a key with two metas
    assert state.list_json("room:odd") == orjson.dumps(state.list("room:odd")).decode()
    assert orjson.loads(state.list_json("room:odd")) == state.list("room:odd")
    assert state.list_json("room:none") == "{}"
