"""Scenario A, fan-out (``fanout``).

N clients (``--clients``, default 1000) join one room (switchboard
``room:bench``); client 0 is also the publisher. Each message carries a
sequence number and the send time; every member, publisher included,
receives it.

The saturated rate, by a closed loop with a bounded window: the publisher
keeps at most W broadcasts (``--window``, default 10) in flight, and one
leaves the window when *all* N clients have received it (or after
``--give-up`` s; its missing copies then count as lost). The server always
has work queued, yet its queues stay bounded, so each server runs at the
rate it can sustain, by the same rule. After ``--warmup`` s we measure for
``--duration`` s:

deliveries/s  copies received by all clients in the window / its length
bcast/s       deliveries/s / N
p50/p99 ms    publisher send -> client receive (both CLOCK_MONOTONIC in this
              process) over every copy of the messages sent in the window.
              In a closed loop this is mostly queueing: about W / bcast/s.
half p50/p99  the same, for ``--half-seconds`` of open-loop publishing at
              half the measured broadcast rate: latency below saturation.
lost          copies expected (N per message sent, warm-up and half-rate
              phase included) minus copies received, after a drain.
server_cpu    CPU time of the server's process tree / wall time (100% = a core)
gen_cpu       CPU time of this process / wall time, over the same window

The clients are connected and joined with asyncio (``leanws.py``, a small
raw WebSocket client), then their sockets are handed to a receive loop in C
(``pump.c``, compiled on first use and called through ctypes; Python
fallback in ``receivers.py``) that reads each socket, walks the frames and
only parses the sequence number of a broadcast. Sockets are read at most
once per ``--poll-ms`` (1 ms): latencies carry up to that much error. Most
of the generator's CPU is then the kernel's ``read``. A core more than 85%
busy (processes and interrupts) counts as saturated; if the generator's is,
the output says the rate is only a lower bound for the server.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from pathlib import Path
from time import perf_counter
from typing import Any

from .clients import open_clients
from .flavors import Flavor
from .leanws import WSClient
from .metering import CpuSource, Meter, cpu_summary
from .multirecv import ReceiverGroup, merged_percentile_ms, shared_group
from .processes import ServerProcess, ServerSpec
from .receivers import EOF_MARK


class FanoutLoop:
    """The measuring part of scenario A: one blocking loop, asyncio set aside.

    The clients were connected and joined with asyncio; here their sockets go to a
    receiver (``receivers.py``: C via ctypes, or Python) that reads them and counts
    every broadcast. This loop publishes, retires completed broadcasts from the
    window, answers control frames and moves through the phases: warm-up and
    measure (closed loop, at most ``window`` in flight), drain, ``half_seconds`` of
    open-loop publishing at half the measured broadcast rate, final drain.
    """

    SAT, HALF = 1, 2  # latency histogram classes (0: not recorded)

    def __init__(
        self,
        flavor: Flavor,
        clients: list[WSClient],
        args: argparse.Namespace,
        groups: list[int] | None = None,
    ) -> None:
        """``groups``: sizes of consecutive runs of ``clients`` (one per server node), each
        read by its own receiver with its own counts and latency histogram."""
        self.flavor = flavor
        self.clients = clients
        self.args = args
        self.n = len(clients)
        self.groups = groups or [self.n]
        if sum(self.groups) != self.n:
            raise ValueError(f"groups {self.groups} do not add up to {self.n} clients")
        self.shareds = shared_group(
            len(self.groups), seq_cap=1_000_000, classes=3, nbuckets=1_000_000, bucket_s=10e-6
        )
        self.shared = self.shareds[0]  # sent_at and rec, shared by all groups
        self.next_seq = 0
        self.inflight: dict[int, float] = {}
        self.gave_up = 0
        self.overruns = 0
        self.unknown: list[bytes] = []
        self.body_pad = "x" * args.payload_bytes
        self.pub = clients[0]

    def send(self, rec: int) -> None:
        seq = self.next_seq
        if seq >= self.shared.seq_cap:
            raise RuntimeError("sequence space exhausted; use a shorter --duration")
        self.next_seq = seq + 1
        t = perf_counter()
        self.shared.sent_at[seq] = t
        self.shared.rec[seq] = rec
        self.inflight[seq] = t
        body = f'{{"s":"#{seq:08d}","t":{t:.6f},"b":"{self.body_pad}"}}'
        self.pub.send_text(self.flavor.shout(self.pub, body))

    def count(self, seq: int) -> int:
        return sum(sh.counts[seq] for sh in self.shareds)

    def received(self, upto: int) -> int:
        """Copies received of messages ``0 .. upto - 1``, all groups."""
        return sum(sum(sh.counts[:upto]) for sh in self.shareds)

    def percentile_ms(self, cls: int, q: float, group: int | None = None) -> float:
        if group is not None:
            return self.shareds[group].percentile_ms(cls, q)
        return merged_percentile_ms(self.shareds, cls, q)

    def watchdog(self, now: float, alive: int) -> None:
        for seq, t in list(self.inflight.items()):
            got = self.count(seq)
            if now - t > self.args.give_up or got >= alive:
                if got < self.n:
                    self.gave_up += 1
                del self.inflight[seq]

    def run(self, sp: CpuSource) -> dict[str, Any]:
        args = self.args
        flavor = self.flavor
        control = flavor.control
        inflight = self.inflight
        window = args.window
        by_fd: dict[int, WSClient] = {}
        fds = []
        group_of = [g for g, size in enumerate(self.groups) for _ in range(size)]
        for cl, g in zip(self.clients, group_of, strict=True):
            fd = cl.detach()
            by_fd[fd] = cl
            fds.append((fd, cl.buf, g))
            cl.buf = b""
        recv = ReceiverGroup(
            args.receiver, self.shareds, self.groups, flavor.shout_prefix, max(by_fd)
        )
        for fd, pending, g in fds:
            recv.add(fd, pending, g)
        self.receiver_name = recv.name

        start = perf_counter()
        t_measure = start + args.warmup
        t_measure_end = t_measure + args.duration
        phase = 0  # 0 warm-up, 1 measure, 2 drain, 3 half rate, 4 final drain, 5 done
        rec_now = 0
        deadline = 0.0
        next_watch = start
        next_heartbeat = start + 30.0
        half_interval = 0.0
        next_send = 0.0
        meter: Meter | None = None
        s0: dict[str, int] = {}
        g0: list[dict[str, int]] = []
        dropped = 0
        cycle = args.poll_ms / 1000
        last_poll = 0.0
        out: dict[str, Any] = {}

        gc.disable()
        try:
            while phase < 5:
                # ---- publish
                if phase <= 1:
                    while len(inflight) < window:
                        self.send(rec_now)
                elif phase == 3:
                    now = perf_counter()
                    while next_send <= now:
                        if len(inflight) < 4 * window:
                            self.send(self.HALF)
                        else:
                            self.overruns += 1
                        next_send += half_interval
                # ---- receive. Reading each socket the moment it holds one frame
                # costs a wake-up per frame; polling at most once per cycle batches.
                pause = last_poll + cycle - perf_counter()
                if pause > 0:
                    time.sleep(pause)
                now, done, side = recv.run(5)
                last_poll = now
                for seq in done:
                    inflight.pop(seq, None)
                for fd, b0, payload in side:
                    cl = by_fd[fd]
                    if b0 == EOF_MARK:
                        cl.closed = True
                        dropped += 1
                    elif b0 == 0x81:
                        if len(self.unknown) < 5:
                            self.unknown.append(payload[:160])
                        control(cl, payload, now)
                    else:
                        cl._other(b0, payload, now)
                # ---- timers and phase changes
                if now >= next_watch:
                    self.watchdog(now, self.n - dropped)
                    next_watch = now + 0.2
                if now >= next_heartbeat:
                    for cl in self.clients:
                        flavor.heartbeat(cl)
                    next_heartbeat = now + 30.0
                if phase == 0 and now >= t_measure:
                    phase, rec_now = 1, self.SAT
                    meter = Meter(sp, args.server_core, args.gen_core)
                    s0 = recv.stats()
                    g0 = recv.group_stats()
                elif phase == 1 and now >= t_measure_end:
                    assert meter is not None
                    out.update(meter.stop())
                    s1 = recv.stats()
                    wall = out.pop("wall")
                    delivered = s1["delivered"] - s0["delivered"]
                    reads = s1["reads"] - s0["reads"]
                    out["deliveries_per_s"] = delivered / wall
                    out["group_deliveries_per_s"] = [
                        (b["delivered"] - a["delivered"]) / wall
                        for a, b in zip(g0, recv.group_stats(), strict=True)
                    ]
                    out["frames_per_read"] = delivered / max(1, reads)
                    out["reads_per_poll"] = reads / max(1, s1["polls"] - s0["polls"])
                    gen_s = out["gen_cpu"] / 100 * wall
                    out["gen_us_per_delivery"] = gen_s / max(1, delivered) * 1e6
                    phase, rec_now = 2, 0
                    deadline = now + args.drain
                elif phase in (2, 4) and (not inflight or now >= deadline):
                    bcast = out["deliveries_per_s"] / self.n
                    if phase == 2 and args.half_seconds > 0 and bcast > 0:
                        phase = 3
                        half_interval = 1.0 / (bcast / 2)
                        next_send = now
                        deadline = now + args.half_seconds
                    else:
                        phase = 5
                elif phase == 3 and now >= deadline:
                    phase = 4
                    deadline = now + args.drain
            out["dropped"] = dropped
            out["receiver_stats"] = recv.stats()
            out["group_receiver_stats"] = recv.group_stats()
        finally:
            gc.enable()
            recv.close()
        return out


def fanout_result(
    label: str, loop: FanoutLoop, m: dict[str, Any], connect_s: float, health: str
) -> dict[str, Any]:
    args = loop.args
    sent = loop.next_seq
    expected = sent * loop.n
    received = loop.received(sent)
    rate = m["deliveries_per_s"]
    res: dict[str, Any] = {
        "server": label,
        "clients": loop.n,
        "window": args.window,
        "receiver": loop.receiver_name,
        "connect_s": round(connect_s, 2),
        "health_live": health,
        "deliveries_per_s": round(rate),
        "broadcasts_per_s": round(rate / loop.n, 1),
        "p50_ms": round(loop.percentile_ms(loop.SAT, 0.50), 2),
        "p99_ms": round(loop.percentile_ms(loop.SAT, 0.99), 2),
        "half_rate_bcast_per_s": round(rate / loop.n / 2, 1),
        "half_p50_ms": round(loop.percentile_ms(loop.HALF, 0.50), 2),
        "half_p99_ms": round(loop.percentile_ms(loop.HALF, 0.99), 2),
        "half_overruns": loop.overruns,
        "messages_sent": sent,
        "expected": expected,
        "received": received,
        "lost": expected - received,
        "gave_up": loop.gave_up,
        "connections_dropped": m["dropped"],
        **cpu_summary(m),
        "frames_per_read": round(m["frames_per_read"], 2),
        "reads_per_poll": round(m["reads_per_poll"], 1),
        "gen_us_per_delivery": round(m["gen_us_per_delivery"], 2),
        "receiver_stats": m["receiver_stats"],
    }
    if len(loop.groups) > 1:
        groups = []
        for g, size in enumerate(loop.groups):
            sh = loop.shareds[g]
            got = sum(sh.counts[:sent])
            groups.append(
                {
                    "clients": size,
                    "deliveries_per_s": round(m["group_deliveries_per_s"][g]),
                    "p50_ms": round(loop.percentile_ms(loop.SAT, 0.50, g), 2),
                    "p99_ms": round(loop.percentile_ms(loop.SAT, 0.99, g), 2),
                    "half_p50_ms": round(loop.percentile_ms(loop.HALF, 0.50, g), 2),
                    "half_p99_ms": round(loop.percentile_ms(loop.HALF, 0.99, g), 2),
                    "expected": sent * size,
                    "received": got,
                    "lost": sent * size - got,
                    "receiver_stats": m["group_receiver_stats"][g],
                }
            )
        res["groups"] = groups
    cpu_parts = {k[4:]: round(v, 1) for k, v in m.items() if k.startswith("cpu:")}
    if cpu_parts:
        res["server_cpu_parts"] = cpu_parts
    if received == 0:
        res["error"] = f"no broadcast received; other frames: {loop.unknown!r}"
    return res


async def run_fanout(spec: ServerSpec, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    flavor = spec.flavor()
    sp = ServerProcess(spec, args.server_core, logdir)
    clients: list[WSClient] = []
    try:
        await sp.wait_ready()
        t = perf_counter()
        clients = await open_clients(
            sp, flavor, args.clients, flavor.room("bench"), flavor.control, args.connect_concurrency
        )
        connect_s = perf_counter() - t
        gc.collect()
        gc.freeze()
        k = max(1, min(args.receiver_groups, args.clients))
        groups = [args.clients // k + (1 if g < args.clients % k else 0) for g in range(k)]
        loop = FanoutLoop(flavor, clients, args, groups=groups)
        m = loop.run(sp)
        return fanout_result(spec.label, loop, m, connect_s, sp.health)
    finally:
        for cl in clients:
            cl.close()
        gc.unfreeze()
        await asyncio.sleep(0)
        sp.stop()
