"""Tests of presence changes merged over a window (presence.batch): pure data, like the state.

The property tests run the simulated cluster of test_state, but each node's clients only
see its diffs merged at flushes, and the nodes send each other their deltas merged too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.presence.batch import DiffBatch, merge_deltas
from switchboard.presence.state import Delta, Diff, Entry, PresenceState
from tests.presence.test_state import (
    FAST,
    OWNERS,
    TOPICS,
    Cluster,
    Lists,
    assert_same_ordered,
    local_ops,
    payload,
    snapshot_wire,
    sync_diff,
    wire,
)


def _batch(*diffs: dict[str, Diff]) -> dict[str, list[Diff]]:
    batches: dict[str, DiffBatch] = {}
    for diff in diffs:
        for topic, d in diff.items():
            batches.setdefault(topic, DiffBatch()).add(d)
    return {topic: batch.diffs() for topic, batch in batches.items()}


def _view(before: Lists, diffs: list[Diff]) -> Lists:
    for diff in diffs:
        before = sync_diff(before, payload(diff))
    return before


# --- unit tests


def test_a_meta_that_joins_and_leaves_within_a_window_is_never_sent() -> None:
    state = PresenceState("n1:a")
    merged = _batch(state.track("o1", "t", "u1", {})[1], state.untrack("o1", "t", "u1")[1])
    assert merged == {"t": []}


def test_joins_in_a_window_are_one_diff_in_the_order_they_came() -> None:
    state = PresenceState("n1:a")
    changes = [state.track(f"o{i}", "t", key, {"i": i})[1] for i, key in enumerate("bab")]
    [diff] = _batch(*changes)["t"]
    assert list(diff.joins) == ["b", "a"] and [m["i"] for m in diff.joins["b"]] == [0, 2]
    assert diff.leaves == {}
    assert _view({}, [diff]) == state.list("t")


def test_updates_in_a_window_are_one_diff_from_the_first_meta_to_the_last() -> None:
    state = PresenceState("n1:a")
    before = _view({}, _batch(state.track("o", "t", "u", {"v": 1})[1])["t"])
    updates = [state.update("o", "t", "u", {"v": v})[1] for v in (2, 3)]
    [diff] = _batch(*updates)["t"]
    assert [m["v"] for m in diff.leaves["u"]] == [1]
    assert [m["v"] for m in diff.joins["u"]] == [3]
    assert _view(before, [diff]) == state.list("t")


def test_a_meta_that_leaves_and_comes_back_needs_a_second_diff() -> None:
    a, b = PresenceState("a:1"), PresenceState("b:1")
    b.replace_node("a:1", [], 0)
    b.track("o", "t", "u", {})
    b.apply_delta(a.track("o", "t", "u", {})[0])
    before = b.list("t")
    gone = b.remove_node("a:1")  # the node seemed down ...
    back = b.replace_node("a:1", *snapshot_wire(a))  # ... and came back with the same meta
    merged = _batch(gone, back)["t"]
    assert len(merged) == 2
    assert_same_ordered(_view(before, merged), b.list("t"))


def test_a_key_that_empties_and_fills_again_needs_a_second_diff_to_keep_the_key_order() -> None:
    state = PresenceState("n1:a")
    state.track("o1", "t", "u1", {})
    state.track("o2", "t", "u2", {})
    before = state.list("t")
    changes = [state.untrack("o1", "t", "u1")[1], state.track("o3", "t", "u1", {})[1]]
    merged = _batch(*changes)["t"]
    assert len(merged) == 2
    assert list(state.list("t")) == ["u2", "u1"]
    assert_same_ordered(_view(before, merged), state.list("t"))


def test_merged_deltas_span_their_seqs_and_leave_out_what_came_and_went() -> None:
    state = PresenceState("n1:a")
    deltas = [
        state.track("o1", "t", "u1", {})[0],
        state.track("o2", "t", "u2", {})[0],
        state.untrack("o2", "t", "u2")[0],
        state.track("o3", "t", "u3", {})[0],
    ]
    merged = merge_deltas(deltas)
    assert (merged.first, merged.seq, merged.first_seq) == (1, 4, 1)
    assert [e.key for e in merged.joins] == ["u1", "u3"] and merged.leaves == ()
    assert wire(merged) == merged
    assert merge_deltas(deltas[:1]) is deltas[0]


def test_only_consecutive_deltas_of_one_node_merge() -> None:
    a, b = PresenceState("a:1"), PresenceState("b:1")
    first, _ = a.track("o", "t", "u1", {})
    a.track("o", "t", "u2", {})
    third, _ = a.track("o", "t", "u3", {})
    with pytest.raises(ValueError):
        merge_deltas([first, third])
    with pytest.raises(ValueError):
        merge_deltas([first, b.track("o", "t", "u", {})[0]])
    with pytest.raises(ValueError):
        merge_deltas([])


def test_a_merged_delta_is_applied_only_right_after_the_last_seq_applied() -> None:
    a, b = PresenceState("a:1"), PresenceState("b:1")
    b.replace_node("a:1", [], 0)
    one, _ = a.track("o", "t", "u1", {})
    merged = merge_deltas([a.track("o", "t", "u2", {})[0], a.track("o", "t", "u3", {})[0]])
    assert b.apply_delta(merged) == {} and b.needs_sync("a:1", merged.seq)
    b.apply_delta(one)
    assert set(b.apply_delta(merged)["t"].joins) == {"u2", "u3"}
    assert not b.needs_sync("a:1", 3)


@pytest.mark.parametrize("first", [0, 5, True, "1"])
def test_a_wire_delta_with_a_bad_first_seq_is_refused(first: Any) -> None:
    with pytest.raises(ValueError):
        Delta.from_wire({"node": "a", "seq": 4, "first": first, "joins": [], "leaves": []})


def test_an_entry_leaving_makes_its_key_vanish_only_with_its_last_meta() -> None:
    state = PresenceState("n1:a")
    state.track("o1", "t", "u", {})
    state.track("o2", "t", "u", {})
    assert state.untrack("o1", "t", "u")[1]["t"].vanished == set()
    assert state.untrack("o2", "t", "u")[1]["t"].vanished == {"u"}


def test_entries_keep_their_metas_on_the_wire() -> None:
    entry = Entry("a:1", "o", "t", "k", "ref", {"x": [1]})
    assert Entry.from_wire(entry.to_wire()) == entry


# --- property-based tests: the simulated cluster, with windows


@dataclass
class WindowedCluster(Cluster):
    """Diffs wait in a batch per node until ``flush``; so do the node's own deltas, which
    then go out merged. Clients' views change only at flushes."""

    batches: list[dict[str, DiffBatch]] = field(default_factory=list)
    deltas: list[list[Delta]] = field(default_factory=list)

    @classmethod
    def boot_windowed(cls, size: int) -> WindowedCluster:
        base = Cluster.boot(size)
        cluster = cls(base.states, base.links, base.tracked, base.views)
        cluster.batches = [{} for _ in range(size)]
        cluster.deltas = [[] for _ in range(size)]
        return cluster

    def see(self, index: int, diffs: dict[str, Diff]) -> None:
        for topic, diff in diffs.items():
            self.batches[index].setdefault(topic, DiffBatch()).add(diff)

    def local(self, index: int, op: tuple[Any, ...]) -> None:
        outgoing = {link: len(queue) for link, queue in self.links.items() if link[0] == index}
        super().local(index, op)
        held = None
        for link, length in outgoing.items():  # the same delta went on every outgoing link
            if len(self.links[link]) > length:
                held = self.links[link].pop()
        if held is not None:
            self.deltas[index].append(held)

    def flush(self, index: int) -> None:
        batches, self.batches[index] = self.batches[index], {}
        for topic, batch in batches.items():
            for diff in batch.diffs():
                assert diff.joins or diff.leaves
                self.views[index][topic] = sync_diff(self.views[index][topic], payload(diff))
        for topic in TOPICS:
            assert_same_ordered(self.views[index][topic], self.states[index].list(topic))
        if self.deltas[index]:
            merged = wire(merge_deltas(self.deltas[index]))
            self.deltas[index] = []
            for (sender, _), queue in self.links.items():
                if sender == index:
                    queue.append(merged)


windowed_ops = st.one_of(
    st.tuples(st.just("local"), st.integers(0, 2), local_ops),
    st.tuples(st.just("deliver"), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("flush"), st.integers(0, 2)),
    st.tuples(st.just("drop"), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("resync"), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("remove"), st.integers(0, 2), st.integers(0, 2)),
)


@FAST
@given(size=st.integers(2, 3), ops=st.lists(windowed_ops, max_size=60))
def test_clients_fed_merged_diffs_at_flushes_see_exactly_the_lists(
    size: int, ops: list[Any]
) -> None:
    cluster = WindowedCluster.boot_windowed(size)
    for op in ops:
        if op[0] == "flush":
            cluster.flush(op[1] % size)
        else:
            cluster.step(op)
    for index in range(size):
        cluster.flush(index)


@FAST
@given(size=st.integers(2, 3), ops=st.lists(windowed_ops, max_size=60))
def test_nodes_sending_merged_deltas_converge(size: int, ops: list[Any]) -> None:
    cluster = WindowedCluster.boot_windowed(size)
    for op in ops:
        if op[0] == "local":
            cluster.local(op[1] % size, op[2])
        elif op[0] == "flush":
            cluster.flush(op[1] % size)
        elif op[0] == "deliver":
            cluster.deliver(op[1] % size, op[2] % size)
    for index in range(size):
        cluster.flush(index)
    cluster.deliver_all()
    for index in range(size):
        cluster.flush(index)
    expected = cluster.canonical_lists(0)
    for index in range(1, size):
        assert cluster.canonical_lists(index) == expected
    for state in cluster.states:
        assert all(not state.needs_sync(other.node, other.seq) for other in cluster.states)


dense_ops = st.one_of(  # one topic, two keys: keys empty and fill again often
    st.tuples(
        st.sampled_from(["track", "update"]),
        st.sampled_from(OWNERS),
        st.just(TOPICS[0]),
        st.sampled_from(["u1", "u2"]),
        st.fixed_dictionaries({"v": st.integers(0, 2)}),
    ),
    st.tuples(
        st.just("untrack"),
        st.sampled_from(OWNERS),
        st.just(TOPICS[0]),
        st.sampled_from(["u1", "u2"]),
    ),
    st.tuples(st.just("untrack_owner"), st.sampled_from(OWNERS)),
    st.just(("flush",)),
)


@settings(max_examples=1000, deadline=None, derandomize=True, database=None)
@given(ops=st.lists(dense_ops, max_size=40))
def test_a_nodes_own_changes_merged_at_flushes_give_its_clients_exactly_the_lists(
    ops: list[Any],
) -> None:
    cluster = WindowedCluster.boot_windowed(1)
    for op in ops:
        if op[0] == "flush":
            cluster.flush(0)
        else:
            cluster.local(0, op)
    cluster.flush(0)
