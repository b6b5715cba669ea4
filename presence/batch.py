"""Presence changes gathered over a short window, merged: pure data, like :mod:`.state`.

A room whose members all join at once would otherwise send every member one
``presence_diff`` per join. Phoenix's tracker batches its deltas the same way: the
changes of a window go out as one diff per topic, and this node's changes go to the other
nodes as one delta.

A merged diff must leave a phoenix.js client (``Presence.syncDiff``: joins first, then
leaves) with exactly the list that applying each diff in turn would, keys and metas in the
same order. A meta that joins and leaves within the window is dropped from both sides. Two
things cannot be said in one diff: a meta that leaves and joins again (the joins would
come first), and a key whose last meta left and that gets a new one (phoenix.js would keep
the key in its old place; the list moved it to the end). There the batch starts a new diff,
so a window may end in more than one.
"""

from __future__ import annotations

from collections.abc import Sequence

from switchboard.presence.state import Delta, Diff, Entry, Meta


class _Segment:
    """One diff of the batch: key -> phx_ref -> meta, joined and left."""

    __slots__ = ("joins", "leaves", "vanished")

    def __init__(self) -> None:
        self.joins: dict[str, dict[str, Meta]] = {}
        self.leaves: dict[str, dict[str, Meta]] = {}
        self.vanished: set[str] = set()

    def takes(self, diff: Diff) -> bool:
        """False if ``diff`` joins a key that vanished, or a meta that left, in this one."""
        for key, metas in diff.joins.items():
            if key in self.vanished:
                return False
            left = self.leaves.get(key)
            if left and any(meta["phx_ref"] in left for meta in metas):
                return False
        return True

    def add(self, diff: Diff) -> None:
        for key, metas in diff.joins.items():
            joining = self.joins.setdefault(key, {})
            for meta in metas:
                joining[meta["phx_ref"]] = meta
        for key, metas in diff.leaves.items():
            joined = self.joins.get(key)
            for meta in metas:
                ref = meta["phx_ref"]
                if joined is not None and ref in joined:  # came and went: nobody needs it
                    del joined[ref]
                else:
                    self.leaves.setdefault(key, {})[ref] = meta
            if joined is not None and not joined:
                del self.joins[key]
        self.vanished |= diff.vanished

    def diff(self) -> Diff | None:
        if not self.joins and not self.leaves:
            return None
        return Diff(
            {key: list(metas.values()) for key, metas in self.joins.items()},
            {key: list(metas.values()) for key, metas in self.leaves.items()},
            set(self.vanished),
        )


class DiffBatch:
    """The diffs of one topic since the last flush, merged into as few as phoenix.js needs."""

    __slots__ = ("_segments",)

    def __init__(self) -> None:
        self._segments = [_Segment()]

    def add(self, diff: Diff) -> None:
        segment = self._segments[-1]
        if not segment.takes(diff):
            segment = _Segment()
            self._segments.append(segment)
        segment.add(diff)

    def diffs(self) -> list[Diff]:
        """The merged diffs, in order; none if everything that came also went."""
        return [diff for segment in self._segments if (diff := segment.diff()) is not None]


def merge_deltas(deltas: Sequence[Delta]) -> Delta:
    """One delta for consecutive deltas of one node (seqs ``first`` .. ``seq``).

    Applying it has the effect of applying them in turn: phx_refs are never reused, so an
    entry that joined and left among them is simply left out.
    """
    if not deltas:
        raise ValueError("nothing to merge")
    if len(deltas) == 1:
        return deltas[0]
    node, first = deltas[0].node, deltas[0].first_seq
    expected = first
    joins: dict[str, Entry] = {}
    leaves: list[str] = []
    for delta in deltas:
        if delta.node != node or delta.first_seq != expected:
            raise ValueError(f"deltas to merge must be consecutive deltas of {node!r}")
        expected = delta.seq + 1
        for entry in delta.joins:
            joins[entry.phx_ref] = entry
        for ref in delta.leaves:
            if joins.pop(ref, None) is None:
                leaves.append(ref)
    last = deltas[-1].seq
    return Delta(node, last, tuple(joins.values()), tuple(leaves), first)
