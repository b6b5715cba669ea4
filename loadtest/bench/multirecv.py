"""Several receivers read as one: each group of client sockets gets its own receiver.

The 2-node fan-out run (``bench.py --servers switchboard-2node``) puts the sockets
connected to node 1 in one group and those connected to node 2 in another, so that
the copies each node delivered get their own count and latency histogram (node 2's
came through Redis). The single-node run uses the same arrangement with one group.

``ReceiverGroup`` has the interface of one receiver (``run``, ``stats``, ``close``,
``name``; ``add`` takes the group): with one group it passes every call straight to
that group's receiver. With several, ``run`` waits in an epoll holding every socket
(so no group's wait delays another's reads), then lets each receiver read without
waiting, in turn; the group that reads first alternates, so neither group's copies are
always timestamped after the other group's reads. A sequence number is done when every
group has reported it done.

Each group has its own ``Shared`` (counts and histograms); ``sent_at`` and ``rec`` are
the first group's arrays, shared by all, so the publisher writes them once.

``pump.c`` keeps its state in C globals, so a loaded library serves one receiver. Group
``i > 0`` loads a copy of the compiled library (a separate file: ``dlopen`` loads it
again, with its own globals).
"""

from __future__ import annotations

import select
import shutil
from array import array
from pathlib import Path

from . import receivers
from .receivers import CReceiver, PyReceiver, Shared, make_receiver

Receiver = CReceiver | PyReceiver


def shared_group(
    count: int, seq_cap: int, classes: int, nbuckets: int, bucket_s: float
) -> list[Shared]:
    """``count`` Shared objects with their own counts and histograms and one ``sent_at``
    and ``rec``, those of the first."""
    first = Shared(seq_cap, classes, nbuckets, bucket_s)
    out = [first]
    for _ in range(count - 1):
        sh = Shared(1, classes, nbuckets, bucket_s)  # tiny, then given the real arrays
        sh.seq_cap = seq_cap
        sh.counts = array("i", [0]) * seq_cap
        sh.sent_at = first.sent_at
        sh.rec = first.rec
        out.append(sh)
    return out


def _pump_copy(index: int) -> Path:
    so = receivers.build_pump()
    copy = so.with_name(f"{so.stem}-copy{index}.so")
    if not copy.exists():
        tmp = copy.with_name(f"{copy.name}.tmp")
        shutil.copyfile(so, tmp)
        tmp.replace(copy)
    return copy


def _make(kind: str, index: int, shared: Shared, n: int, prefix: bytes, max_fd: int) -> Receiver:
    if index == 0 or kind != "c":
        return make_receiver(kind, shared, n, prefix, max_fd)
    original = receivers.build_pump
    copy = _pump_copy(index)
    receivers.build_pump = lambda: copy  # CReceiver loads whatever build_pump returns
    try:
        return CReceiver(shared, n, prefix, max_fd)
    finally:
        receivers.build_pump = original


class ReceiverGroup:
    def __init__(
        self, kind: str, shareds: list[Shared], sizes: list[int], prefix: bytes, max_fd: int
    ) -> None:
        if len(shareds) != len(sizes) or not sizes or min(sizes) < 1:
            raise ValueError(f"need one Shared per group and groups of 1+ sockets: {sizes}")
        self.shareds = shareds
        self.sizes = sizes
        self.subs: list[Receiver] = []
        try:
            for i, (sh, n) in enumerate(zip(shareds, sizes, strict=True)):
                sub = _make(kind, i, sh, n, prefix, max_fd)
                self.subs.append(sub)
                kind = sub.name  # "auto" fell back to Python: all groups alike
        except BaseException:
            self.close()
            raise
        self.name = self.subs[0].name
        self.waiter = select.epoll() if len(self.subs) > 1 else None
        self.groups_done = bytearray(shareds[0].seq_cap) if len(self.subs) > 1 else bytearray()
        self.turn = 0

    def add(self, fd: int, pending: bytes = b"", group: int = 0) -> None:
        self.subs[group].add(fd, pending)
        if self.waiter is not None:
            self.waiter.register(fd, select.EPOLLIN)

    def run(self, timeout_ms: int) -> tuple[float, list[int], list[tuple[int, int, bytes]]]:
        if self.waiter is None:
            return self.subs[0].run(timeout_ms)
        try:
            self.waiter.poll(timeout_ms / 1000, 1)
        except InterruptedError:
            pass
        k = len(self.subs)
        self.turn = (self.turn + 1) % k
        now = 0.0
        done: list[int] = []
        side: list[tuple[int, int, bytes]] = []
        groups_done = self.groups_done
        for j in range(k):
            t, sub_done, sub_side = self.subs[(self.turn + j) % k].run(0)
            now = max(now, t)
            for seq in sub_done:
                c = groups_done[seq] + 1
                groups_done[seq] = c
                if c == k:
                    done.append(seq)
            if sub_side:
                side.extend(sub_side)
        return now, done, side

    def stats(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for sub in self.subs:
            for key, v in sub.stats().items():
                total[key] = total.get(key, 0) + v
        return total

    def group_stats(self) -> list[dict[str, int]]:
        return [sub.stats() for sub in self.subs]

    def close(self) -> None:
        for sub in self.subs:
            sub.close()
        waiter = getattr(self, "waiter", None)
        if waiter is not None:
            waiter.close()


def merged_percentile_ms(shareds: list[Shared], cls: int, q: float) -> float:
    """``Shared.percentile_ms`` over the histograms of several groups added up."""
    if len(shareds) == 1:
        return shareds[0].percentile_ms(cls, q)
    nb = shareds[0].nbuckets
    merged: dict[int, int] = {}
    for sh in shareds:
        part = sh.hist[cls * nb : (cls + 1) * nb]
        for i, c in enumerate(part):
            if c:
                merged[i] = merged.get(i, 0) + c
    total = sum(merged.values())
    if total == 0:
        return float("nan")
    rank = q * total
    seen = 0
    for i in sorted(merged):
        seen += merged[i]
        if seen >= rank:
            return (i + 1) * shareds[0].bucket_s * 1000
    return nb * shareds[0].bucket_s * 1000
