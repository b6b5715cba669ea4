"""Benchmark switchboard against python-socketio and a bare websockets broadcast server.

    .venv/bin/python loadtest/bench.py                      # everything, about 4 min
    .venv/bin/python loadtest/bench.py --servers switchboard --scenarios fanout \\
        --variant presence-off:SWITCHBOARD_PRESENCE=off

Each server runs in its own subprocess pinned to core 0 (``taskset -c 0``) with
RLIMIT_NOFILE raised to the hard limit (at most 65536); this process is the load
generator and pins itself to core 1. Every scenario starts a fresh server. All
numbers, ratios included, come from one invocation. Before each run we wait up
to ``--quiet-wait`` s for both cores to go idle, and during the run we measure
what else used them: a run that shared a busy core with other work is marked
DISTURBED (its numbers are then low). Even undisturbed, this VM's speed drifts
between runs by up to 1.7x; ``--repeat N`` runs everything N times, interleaved,
and reports each server's best run.

Scenario A, fan-out (``fanout``)
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

Scenario A on two nodes (server ``switchboard-2node``, fan-out only)
    A private redis-server on a free loopback port and two switchboard nodes using
    it (``SWITCHBOARD_PUBSUB_URL``, one ``SWITCHBOARD_SECRET`` made up per run,
    ``SWITCHBOARD_NODE=bench1``/``bench2``, otherwise started like the single node).
    Clients 0 .. N/2-1 connect to node 1 (client 0 publishes), the rest to node 2,
    which gets every broadcast through Redis; a broadcast leaves the window when all
    N clients have it. Each node's sockets have their own receiver
    (``multirecv.py``), so deliveries/s, latency and lost copies are also reported
    per node. By default both nodes and redis-server share the server core (0), the
    one core the single node had: ``2-node/1-node per server core`` is then the
    ratio of the two runs' deliveries/s. ``--cluster-cores`` places them otherwise.

Scenario B, ping (``ping``)
    One client on an otherwise idle server sends a request and waits for the
    reply, sequentially, for ``--ping-seconds``: switchboard ``ping`` ->
    ``phx_reply``; a socket.io event with an ack; the websockets server echoes
    (a broadcast to its only connection). Round-trip p50/p99 after 50 warm-ups.

Scenario C, idle memory (``memory``)
    Server RSS (psutil, whole process tree) 1 s after start-up, then after
    ``--mem-clients`` (5000) connections have connected and joined and sat idle
    for ``--settle`` s; reports (after - before) / connections in KiB. Clients
    join rooms of ``--mem-room-size`` (100): ``room:mem:0``, ``room:mem:1``, ...
    for switchboard, ``mem:0``, ... for socket.io; the websockets server has no
    rooms. With ``--mem-room-size 0`` all join one room, ``room:mem``; with
    presence on, each join then sends the whole presence state to the joiner
    and a diff to everyone, O(N^2): 5000 joins take minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, Protocol

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(ROOT))

from flavors import Flavor, PhoenixFlavor, SocketIOFlavor, WebsocketsFlavor  # noqa: E402
from leanws import WSClient, connect  # noqa: E402
from multirecv import ReceiverGroup, merged_percentile_ms, shared_group  # noqa: E402
from receivers import EOF_MARK  # noqa: E402

HOST = "127.0.0.1"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
SWITCHBOARD_BIN = ROOT / ".venv" / "bin" / "switchboard"
FULL = 85.0  # % of a core busy (processes + interrupts): it is saturated
OTHER_LOAD = 15.0  # % of a full core taken by processes other than ours: numbers disturbed
QUIET = 20.0  # % busy below which a core counts as idle before a run
CLUSTER = "switchboard-2node"  # two switchboard nodes and redis-server, fan-out only
ALL_SERVERS = ("switchboard", CLUSTER, "socketio", "websockets")
ALL_SCENARIOS = ("fanout", "ping", "memory")


# --------------------------------------------------------------------------- servers
@dataclass
class ServerSpec:
    label: str
    kind: str  # switchboard | socketio | websockets | switchboard-2node (| redis: its part)
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, port: int) -> list[str]:
        if self.kind == "switchboard":
            return [str(SWITCHBOARD_BIN), "serve", "--host", HOST, "--port", str(port)]
        if self.kind == "redis":
            return [
                redis_server_bin() or "redis-server",
                "--port",
                str(port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tempfile.gettempdir(),  # nothing is written there: no RDB, no AOF
            ]
        script = HERE / "servers" / f"{self.kind}_server.py"
        return [PYTHON, str(script), "--host", HOST, "--port", str(port)]

    def flavor(self) -> Flavor:
        if self.kind in ("switchboard", CLUSTER):
            return PhoenixFlavor(history=self.env.get("SWITCHBOARD_HISTORY_SIZE") != "0")
        if self.kind == "socketio":
            return SocketIOFlavor()
        return WebsocketsFlavor()


def switchboard_available() -> bool:
    return (ROOT / "server" / "cli.py").exists() and SWITCHBOARD_BIN.exists()


def redis_server_bin() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    return next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.access(p, os.X_OK)),
        None,
    )


def raise_nofile() -> None:
    """Lift the soft open-file limit as far as the hard limit allows (at most 65536)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """One server subprocess; tracked globally so it is killed on any exit path."""

    running: dict[int, ServerProcess] = {}

    nice = 0  # set from --nice

    def __init__(self, spec: ServerSpec, core: int, logdir: Path) -> None:
        self.spec = spec
        self.core = core
        self.port = free_port()
        env = os.environ.copy()
        if spec.kind == "switchboard":
            env["SWITCHBOARD_LIMITS"] = "off"
        env.update(spec.env)
        env["PYTHONUNBUFFERED"] = "1"
        self.logpath = logdir / f"{spec.label}-{self.port}.log"
        self.log = open(self.logpath, "wb")  # noqa: SIM115
        cmd = ["taskset", "-c", str(core), *spec.argv(self.port)]
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=str(ROOT),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=self._prepare_child,
            start_new_session=True,  # Ctrl-C goes to us; we stop it ourselves
        )
        self.pid = self.proc.pid
        ServerProcess.running[self.pid] = self
        self.ps = psutil.Process(self.pid)
        self.health: str = "n/a"

    @classmethod
    def _prepare_child(cls) -> None:
        raise_nofile()  # what `prlimit --nofile` would do
        if cls.nice:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, cls.nice)
            except OSError:
                pass

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.logpath.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.label} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                _, w = await asyncio.open_connection(HOST, self.port)
                w.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    msg = f"{self.spec.label} not listening after {timeout}s"
                    raise RuntimeError(msg) from None
                await asyncio.sleep(0.05)
        if self.spec.kind == "switchboard":
            self.health = await self._get_status("/health/live")
        elif self.spec.kind == "redis":
            self.health = await self._redis_ping()
            if self.health != "+PONG":
                raise RuntimeError(f"{self.spec.label}: PING answered {self.health!r}")

    async def wait_status(self, path: str, want: str = "200", timeout: float = 15.0) -> None:
        """Until GET ``path`` answers ``want`` (``/health/ready``: pub/sub connected)."""
        deadline = time.monotonic() + timeout
        while (status := await self._get_status(path)) != want:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.spec.label}: {path} answered {status}, not {want}:\n{self.tail()}"
                )
            await asyncio.sleep(0.1)

    async def _redis_ping(self) -> str:
        try:
            r, w = await asyncio.open_connection(HOST, self.port)
            w.write(b"PING\r\n")
            line = await asyncio.wait_for(r.readline(), 5)
            w.close()
            return line.decode(errors="replace").strip()
        except (TimeoutError, OSError):
            return "?"

    async def _get_status(self, path: str) -> str:
        try:
            r, w = await asyncio.open_connection(HOST, self.port)
            w.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            line = await asyncio.wait_for(r.readline(), 5)
            w.close()
            return line.decode(errors="replace").split(" ", 2)[1]
        except (TimeoutError, OSError, IndexError):
            return "?"

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def cpu_parts(self) -> dict[str, tuple[int, float]]:
        """Process name -> (core it is pinned to, CPU seconds so far)."""
        return {self.spec.label: (self.core, self.cpu_seconds())}

    def rss(self) -> int:
        total = 0
        for p in self.tree():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        children = []
        try:
            children = self.ps.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for c in children:  # by pid, only the ones this server spawned
            try:
                c.kill()
            except psutil.NoSuchProcess:
                pass
        self.log.close()
        ServerProcess.running.pop(self.pid, None)

    @classmethod
    def stop_all(cls) -> None:
        for sp in list(cls.running.values()):
            try:
                sp.stop()
            except Exception as exc:  # noqa: BLE001 - keep killing the rest
                print(f"warning: could not stop pid {sp.pid}: {exc}", file=sys.stderr)


# --------------------------------------------------------------------------- clients
async def open_clients(
    sp: ServerProcess,
    flavor: Flavor,
    count: int,
    room: str | Callable[[int], str],
    on_message: Callable[[WSClient, bytes, float], None],
    concurrency: int,
    first_index: int = 0,
) -> list[WSClient]:
    """Connect and join ``count`` clients, ``concurrency`` handshakes at a time."""
    sem = asyncio.Semaphore(concurrency)
    clients: list[WSClient | None] = [None] * count
    joined: list[WSClient] = []
    room_for = room if callable(room) else (lambda _i: room)

    async def one(i: int) -> None:
        async with sem:
            topic = room_for(i)
            cl = await connect(HOST, sp.port, flavor.path(first_index + i), on_message, i, topic)
            clients[i] = cl
            flavor.on_open(cl, topic)
            await asyncio.wait_for(asyncio.shield(cl.joined), 30)
            joined.append(cl)

    # a slow join phase must not let the first sockets hit the server's idle timeout
    hb = asyncio.create_task(heartbeats(flavor, joined))
    try:
        results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    finally:
        hb.cancel()
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        for cl in clients:
            if cl is not None:
                cl.close()
        raise RuntimeError(
            f"{len(errors)}/{count} clients failed to connect/join; first: {errors[0]!r}\n"
            f"server log:\n{sp.tail()}"
        )
    return [c for c in clients if c is not None]


async def heartbeats(flavor: Flavor, clients: list[WSClient], every: float = 30.0) -> None:
    while True:
        await asyncio.sleep(every)
        for cl in clients:
            flavor.heartbeat(cl)


def pct(values: Any, q: float) -> float:
    if not len(values):
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _core_times(core: int) -> tuple[float, float, float]:
    """(process time, interrupt time, idle time) of one core, in seconds since boot.

    Interrupt time is kept apart: on loopback most of it is our own traffic, and
    it is not charged to any process's CPU time.
    """
    t = psutil.cpu_times(percpu=True)[core]
    busy = t.user + t.nice + t.system + getattr(t, "steal", 0.0)
    irq = getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    idle = t.idle + getattr(t, "iowait", 0.0)
    return float(busy), float(irq), float(idle)


class CpuSource(Protocol):
    """A server (``ServerProcess``) or several (``Cluster``) whose CPU a Meter measures."""

    def cpu_parts(self) -> dict[str, tuple[int, float]]: ...


class Meter:
    """CPU of both sides over one interval, and what else ran on their cores."""

    def __init__(self, sp: CpuSource, server_core: int, gen_core: int) -> None:
        self.sp = sp
        self.cores = (server_core, gen_core)
        self.wall = perf_counter()
        t = os.times()
        self.gen = t.user + t.system
        self.gen_sys = t.system
        self.parts = sp.cpu_parts()
        self.core0 = [_core_times(c) for c in self.cores]

    def stop(self) -> dict[str, float]:
        """Percentages of a core; ``cpu:<name>`` for each server process when there are
        several (a process pinned to a core counts as ours in that core's other load)."""
        wall = perf_counter() - self.wall
        t = os.times()
        gen = (t.user + t.system - self.gen) / wall * 100
        gen_sys = (t.system - self.gen_sys) / wall * 100
        parts = {
            name: (core, (cpu - self.parts[name][1]) / wall * 100)
            for name, (core, cpu) in self.sp.cpu_parts().items()
        }
        srv = sum(pc for _, pc in parts.values())
        on_core = [sum(pc for c, pc in parts.values() if c == core) for core in self.cores]
        core1 = [_core_times(c) for c in self.cores]
        d = [
            [(x1 - x0) / wall * 100 for x0, x1 in zip(c0, c1, strict=True)]
            for c0, c1 in zip(self.core0, core1, strict=True)
        ]
        per_part = {f"cpu:{name}": pc for name, (_, pc) in parts.items()} if len(parts) > 1 else {}
        return {
            "wall": wall,
            "server_cpu": srv,
            "gen_cpu": gen,
            "gen_sys_cpu": gen_sys,
            "other_server_core": max(0.0, d[0][0] - on_core[0]),
            "other_gen_core": max(0.0, d[1][0] - gen - on_core[1]),
            **per_part,
            "irq_server_core": d[0][1],
            "irq_gen_core": d[1][1],
            "idle_server_core": d[0][2],
            "idle_gen_core": d[1][2],
        }


def bottleneck(m: dict[str, float]) -> str:
    """Which core was full (less than 100 - FULL % idle), and whether others shared it."""
    full = {
        "server": m["idle_server_core"] < 100 - FULL,
        "generator": m["idle_gen_core"] < 100 - FULL,
    }
    notes = []
    if full["server"]:
        notes.append("server core saturated")
    if full["generator"]:
        notes.append("GENERATOR core saturated: the rate is a lower bound for the server")
    if not notes:
        notes.append("neither core saturated")
    others = [
        f"{name} core {m[key]:.0f}% busy with other work"
        for name, key in (("server", "other_server_core"), ("generator", "other_gen_core"))
        if full[name] and m[key] > OTHER_LOAD
    ]
    if others:
        notes.append("DISTURBED: " + ", ".join(others))
    return "; ".join(notes)


def pick_run(scenario: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Of repeated runs, the one to report: the fastest fan-out, the quickest ping
    (interference only ever slows a run down), the median memory reading."""
    ok = [r for r in runs if "error" not in r or len(r) > 2] or runs
    if scenario == "fanout":
        best = max(ok, key=lambda r: r.get("deliveries_per_s", -1))
        rates = [r["deliveries_per_s"] for r in ok if "deliveries_per_s" in r]
        if len(rates) > 1:
            best = {**best, "deliveries_per_s_all": rates}
    elif scenario == "ping":
        best = min(ok, key=lambda r: r.get("p50_ms", float("inf")))
    else:
        best = sorted(ok, key=lambda r: r.get("kib_per_conn", 0.0))[len(ok) // 2]
    return {**best, "runs": len(runs)} if len(runs) > 1 else best


async def wait_quiet(max_wait: float, cores: tuple[int, int]) -> float:
    """Wait (up to ``max_wait`` s) until both cores are nearly idle; return the last busy %."""
    deadline = perf_counter() + max_wait
    psutil.cpu_percent(percpu=True)
    busiest = 0.0
    quiet = 0
    while True:
        await asyncio.sleep(0.5)
        per = psutil.cpu_percent(percpu=True)
        busiest = max(per[c] for c in cores)
        quiet = quiet + 1 if busiest < QUIET else 0
        if quiet >= 2 or perf_counter() >= deadline:
            return busiest


# --------------------------------------------------------------------------- scenario A
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
        "server_cpu": round(m["server_cpu"], 1),
        "gen_cpu": round(m["gen_cpu"], 1),
        "gen_sys_cpu": round(m["gen_sys_cpu"], 1),
        "other_load_server_core": round(m["other_server_core"], 1),
        "other_load_gen_core": round(m["other_gen_core"], 1),
        "irq_server_core": round(m["irq_server_core"], 1),
        "irq_gen_core": round(m["irq_gen_core"], 1),
        "idle_server_core": round(m["idle_server_core"], 1),
        "idle_gen_core": round(m["idle_gen_core"], 1),
        "frames_per_read": round(m["frames_per_read"], 2),
        "reads_per_poll": round(m["reads_per_poll"], 1),
        "gen_us_per_delivery": round(m["gen_us_per_delivery"], 2),
        "receiver_stats": m["receiver_stats"],
        "bottleneck": bottleneck(m),
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
    if spec.kind == CLUSTER:
        return await run_fanout_cluster(spec, args, logdir)
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


# --------------------------------------------------------------------------- scenario A, 2 nodes
class Cluster:
    """The 2-node run's servers: a private redis-server and two switchboard nodes using it.

    Each is a ``ServerProcess`` (so ``ServerProcess.stop_all`` stops it by PID on errors and
    Ctrl-C), pinned to its entry of ``cores``: node 1, node 2, redis-server.
    """

    def __init__(self, spec: ServerSpec, cores: list[int], logdir: Path) -> None:
        self.spec = spec
        self.cores = cores
        self.logdir = logdir
        self.secret = "bench-" + secrets.token_hex(24)
        self.redis: ServerProcess | None = None
        self.nodes: list[ServerProcess] = []

    async def start(self) -> None:
        self.redis = ServerProcess(
            ServerSpec(f"{self.spec.label}.redis", "redis"), self.cores[2], self.logdir
        )
        await self.redis.wait_ready()
        for i in (1, 2):
            env = {
                **self.spec.env,
                "SWITCHBOARD_PUBSUB_URL": f"redis://{HOST}:{self.redis.port}/0",
                "SWITCHBOARD_SECRET": self.secret,
                "SWITCHBOARD_NODE": f"bench{i}",
            }
            node_spec = ServerSpec(f"{self.spec.label}.bench{i}", "switchboard", env)
            self.nodes.append(ServerProcess(node_spec, self.cores[i - 1], self.logdir))
        for node in self.nodes:
            await node.wait_ready()
            await node.wait_status("/health/ready")  # 200 once Redis is connected

    def members(self) -> dict[str, ServerProcess]:
        out = {f"bench{i + 1}": node for i, node in enumerate(self.nodes)}
        if self.redis is not None:
            out["redis"] = self.redis
        return out

    def cpu_parts(self) -> dict[str, tuple[int, float]]:
        return {name: (sp.core, sp.cpu_seconds()) for name, sp in self.members().items()}

    def stop(self) -> None:
        """Nodes first (so they do not go on reconnecting), then redis-server; by PID."""
        for sp in [*self.nodes, self.redis]:
            if sp is None:
                continue
            try:
                sp.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others anyway
                print(f"warning: could not stop pid {sp.pid}: {exc}", file=sys.stderr)


def probe_listener(
    flavor: Flavor, seen: dict[int, int]
) -> Callable[[WSClient, bytes, float], None]:
    """``on_message`` for the clients of the 2-node run while asyncio still reads them:
    records in ``seen[id(client)]`` the highest probe number that client received."""
    prefix = flavor.shout_prefix
    control = flavor.control

    def on_message(cl: WSClient, p: bytes, now: float) -> None:
        if p.startswith(prefix):
            j = p.find(b'"probe":', len(prefix))
            if j >= 0:
                digits = re.match(rb"\d+", p[j + 8 : j + 20])  # the room stamps "user" after it
                if digits is None:
                    return
                k = int(digits.group())
                if k > seen.get(id(cl), 0):
                    seen[id(cl)] = k
            return
        control(cl, p, now)

    return on_message


async def cross_node_probe(
    flavor: Flavor, clients: list[WSClient], seen: dict[int, int], timeout: float = 20.0
) -> int:
    """Before measuring: client 0 (node 1) shouts probes until one reaches every client,
    i.e. node 2 has subscribed the topic in Redis. A node learns of a topic's first local
    subscriber at once but subscribes in Redis in the background; measuring earlier would
    count the copies node 2 was not yet subscribed for as lost. Each connection delivers in
    order, so once probe k reached everyone no earlier probe is still on its way.
    Returns the number of probes sent."""
    pub = clients[0]
    deadline = time.monotonic() + timeout
    k = 0
    while True:
        k += 1
        pub.send_text(flavor.shout(pub, f'{{"probe":{k}}}'))
        wait_until = time.monotonic() + 0.5
        while time.monotonic() < wait_until:
            await asyncio.sleep(0.01)
            missing = [i for i, cl in enumerate(clients) if seen.get(id(cl), 0) < k]
            if not missing:
                return k
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"after {k} probes in {timeout:.0f}s, {len(missing)}/{len(clients)} clients "
                f"never got one (first missing: client {missing[0]})"
            )


async def run_fanout_cluster(
    spec: ServerSpec, args: argparse.Namespace, logdir: Path
) -> dict[str, Any]:
    """Scenario A on two nodes: half the clients on each, the publisher (client 0) on
    node 1; every broadcast reaches node 2's half through Redis."""
    if args.clients < 2:
        raise ValueError("the 2-node run needs --clients 2 or more")
    cores = args.cluster_cores or [args.server_core] * 3
    cluster = Cluster(spec, cores, logdir)
    clients: list[WSClient] = []
    try:
        await cluster.start()
        node1, node2 = cluster.nodes
        history = spec.env.get("SWITCHBOARD_HISTORY_SIZE") != "0"
        flavor = PhoenixFlavor(cluster.secret, history)
        n1 = (args.clients + 1) // 2
        n2 = args.clients - n1
        seen: dict[int, int] = {}
        on_message = probe_listener(flavor, seen)
        room = flavor.room("bench")
        t = perf_counter()
        cc = args.connect_concurrency
        clients = await open_clients(node1, flavor, n1, room, on_message, cc)
        clients += await open_clients(node2, flavor, n2, room, on_message, cc, first_index=n1)
        connect_s = perf_counter() - t
        probes = await cross_node_probe(flavor, clients, seen)
        gc.collect()
        gc.freeze()
        loop = FanoutLoop(flavor, clients, args, groups=[n1, n2])
        m = loop.run(cluster)
        res = fanout_result(spec.label, loop, m, connect_s, node1.health)
        for g, name in enumerate(("bench1", "bench2")):
            res["groups"][g]["node"] = name
        res["cluster_cores"] = dict(zip(("bench1", "bench2", "redis"), cores, strict=True))
        res["single_node_core"] = args.server_core
        res["gen_core"] = args.gen_core
        res["probes_before_measuring"] = probes
        for name, sp in cluster.members().items():  # died during the run?
            if sp.proc.poll() is not None:
                res.setdefault("error", f"{name} exited with {sp.proc.returncode}")
        return res
    finally:
        for cl in clients:
            cl.close()
        gc.unfreeze()
        await asyncio.sleep(0)
        cluster.stop()


# --------------------------------------------------------------------------- scenario B
async def run_ping(spec: ServerSpec, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    flavor = spec.flavor()
    sp = ServerProcess(spec, args.server_core, logdir)
    clients: list[WSClient] = []
    try:
        await sp.wait_ready()
        clients = await open_clients(sp, flavor, 1, flavor.room("bench"), flavor.control, 1)
        cl = clients[0]
        loop = asyncio.get_running_loop()
        rtts: list[float] = []
        warm = 50
        meter: Meter | None = None
        end = perf_counter() + args.ping_seconds + 0.5
        while perf_counter() < end:
            if len(rtts) == warm and meter is None:
                meter = Meter(sp, args.server_core, args.gen_core)
                rtts.clear()
                warm = -1
            frame = flavor.ping(cl)
            cl.pending = loop.create_future()
            t = perf_counter()
            cl.send_text(frame)
            now = await asyncio.wait_for(cl.pending, 10)
            rtts.append((now - t) * 1000)
        assert meter is not None
        m = meter.stop()
        return {
            "server": spec.label,
            "pings": len(rtts),
            "p50_ms": round(pct(rtts, 0.50), 3),
            "p99_ms": round(pct(rtts, 0.99), 3),
            "mean_ms": round(statistics.fmean(rtts), 3),
            "server_cpu": round(m["server_cpu"], 1),
            "gen_cpu": round(m["gen_cpu"], 1),
            "other_load_server_core": round(m["other_server_core"], 1),
            "other_load_gen_core": round(m["other_gen_core"], 1),
        }
    finally:
        for cl in clients:
            cl.close()
        await asyncio.sleep(0)
        sp.stop()


# --------------------------------------------------------------------------- scenario C
async def run_memory(spec: ServerSpec, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    flavor = spec.flavor()
    sp = ServerProcess(spec, args.server_core, logdir)
    clients: list[WSClient] = []
    hb: asyncio.Task[None] | None = None
    try:
        await sp.wait_ready()
        await asyncio.sleep(1.0)
        before = sp.rss()
        t = perf_counter()
        meter = Meter(sp, args.server_core, args.gen_core)
        size = args.mem_room_size or args.mem_clients

        def room_for(i: int) -> str:
            if size >= args.mem_clients:
                return flavor.room("mem")
            return flavor.room(f"mem:{i // size}")

        clients = await open_clients(
            sp,
            flavor,
            args.mem_clients,
            room_for,
            flavor.control,
            args.connect_concurrency,
            first_index=100_000,
        )
        connect_s = perf_counter() - t
        m = meter.stop()
        hb = asyncio.create_task(heartbeats(flavor, clients))
        await asyncio.sleep(args.settle)
        after = sp.rss()
        alive = sum(1 for c in clients if not c.closed)
        return {
            "server": spec.label,
            "connections": args.mem_clients,
            "room_size": min(size, args.mem_clients),
            "alive_after_settle": alive,
            "connect_s": round(connect_s, 2),
            "connects_per_s": round(args.mem_clients / connect_s),
            "connect_server_cpu": round(m["server_cpu"], 1),
            "connect_gen_cpu": round(m["gen_cpu"], 1),
            "rss_before_mib": round(before / 2**20, 1),
            "rss_after_mib": round(after / 2**20, 1),
            "kib_per_conn": round((after - before) / 1024 / args.mem_clients, 1),
        }
    finally:
        if hb is not None:
            hb.cancel()
        for cl in clients:
            cl.close()
        await asyncio.sleep(0)
        sp.stop()


SCENARIOS = {"fanout": run_fanout, "ping": run_ping, "memory": run_memory}


# --------------------------------------------------------------------------- reporting
def fmt(v: Any, width: int, digits: int = 1) -> str:
    if isinstance(v, float):
        return f"{v:>{width}.{digits}f}"
    return f"{v!s:>{width}}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "n/a"
    return f"{a / b:.2f}x"


def report(
    results: dict[str, dict[str, dict[str, Any]]],
    specs: list[ServerSpec],
    runs: dict[str, dict[str, list[dict[str, Any]]]] | None = None,
) -> list[str]:
    out: list[str] = []
    labels = [s.label for s in specs]
    w = max(12, *(len(x) for x in labels)) + 1

    fan = {lb: results[lb]["fanout"] for lb in labels if "fanout" in results.get(lb, {})}
    if fan:
        out.append("")
        first = next(iter(fan.values()))
        out.append(
            f"Scenario A: fan-out to {first.get('clients', '?')} clients in one room; closed loop, "
            f"window {first.get('window', '?')}; 'half' = open loop at half that rate"
        )
        out.append(
            f"{'server':<{w}}{'deliveries/s':>13}{'bcast/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'half p50':>9}{'half p99':>9}{'lost':>7}{'server_cpu':>11}{'gen_cpu':>8}"
        )
        notes = []
        for lb, r in fan.items():
            if "deliveries_per_s" not in r:
                out.append(f"{lb:<{w}}ERROR: {r.get('error', '?').splitlines()[0][:150]}")
                continue
            out.append(
                f"{lb:<{w}}{r['deliveries_per_s']:>13,}{r['broadcasts_per_s']:>9.1f}"
                f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['half_p50_ms']:>9.2f}"
                f"{r['half_p99_ms']:>9.2f}{r['lost']:>7}"
                f"{r['server_cpu']:>10.0f}%{r['gen_cpu']:>7.0f}%"
            )
            note = (
                f"  {lb}: {r['bottleneck']}; idle: server core {r['idle_server_core']:.0f}%, "
                f"generator core {r['idle_gen_core']:.0f}%; interrupts "
                f"{r['irq_server_core']:.0f}% / {r['irq_gen_core']:.0f}%; generator "
                f"{r['gen_sys_cpu']:.0f}% of {r['gen_cpu']:.0f}% in the kernel"
            )
            if r.get("deliveries_per_s_all"):
                note += "; deliveries/s in all runs: " + ", ".join(
                    f"{x:,}" for x in r["deliveries_per_s_all"]
                )
            if r.get("connections_dropped"):
                note += f"; {r['connections_dropped']} connections DROPPED"
            if r.get("gave_up"):
                note += f"; {r['gave_up']} broadcasts never reached everyone"
            if r.get("half_overruns"):
                note += f"; half-rate phase fell behind {r['half_overruns']} times"
            if "error" in r:
                note += f"; ERROR {r['error'][:200]}"
            notes.append(note)
            if r.get("groups"):
                notes.append("    " + node_note(r))
        out.extend(notes)

    pings = {lb: results[lb]["ping"] for lb in labels if "ping" in results.get(lb, {})}
    if pings:
        out.append("")
        out.append("Scenario B: request/reply round trip on an idle server, one client")
        out.append(
            f"{'server':<{w}}{'pings':>8}{'p50 ms':>9}{'p99 ms':>9}{'server_cpu':>11}{'gen_cpu':>8}"
        )
        for lb, r in pings.items():
            if "p50_ms" not in r:
                out.append(f"{lb:<{w}}ERROR: {r['error'].splitlines()[0][:150]}")
                continue
            other = max(r["other_load_server_core"], r["other_load_gen_core"])
            out.append(
                f"{lb:<{w}}{r['pings']:>8}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}"
                f"{r['server_cpu']:>10.0f}%{r['gen_cpu']:>7.0f}%"
                + (f"  DISTURBED: {other:.0f}% other load on a core" if other > OTHER_LOAD else "")
            )

    mem = {lb: results[lb]["memory"] for lb in labels if "memory" in results.get(lb, {})}
    if mem:
        out.append("")
        out.append("Scenario C: idle memory")
        out.append(
            f"{'server':<{w}}{'conns':>7}{'RSS before':>12}{'RSS after':>11}{'KiB/conn':>10}"
            f"{'connects/s':>12}"
        )
        for lb, r in mem.items():
            if "kib_per_conn" not in r:
                out.append(f"{lb:<{w}}ERROR: {r['error'].splitlines()[0][:150]}")
                continue
            out.append(
                f"{lb:<{w}}{r['connections']:>7}{r['rss_before_mib']:>9.1f}MiB"
                f"{r['rss_after_mib']:>8.1f}MiB{r['kib_per_conn']:>10.1f}{r['connects_per_s']:>12}"
            )

    def get(lb: str, scen: str, key: str) -> float | None:
        v = results.get(lb, {}).get(scen, {}).get(key)
        return v if isinstance(v, (int, float)) else None

    out.append("")
    if "switchboard" in labels:
        parts = []
        for other in ("socketio", "websockets"):
            if other in labels:
                a = get("switchboard", "fanout", "deliveries_per_s")
                b = get(other, "fanout", "deliveries_per_s")
                parts.append(f"switchboard/{other} = {ratio(a, b)}")
        if parts and fan:
            out.append("ratios (deliveries/s): " + "   ".join(parts))
    two = two_node_summary(results, runs)
    if two:
        out.extend(two["lines"])
    if mem:
        out.append(
            "memory KiB/conn: "
            + "  ".join(f"{lb} {r['kib_per_conn']}" for lb, r in mem.items() if "kib_per_conn" in r)
        )
    variants = [s for s in specs if s.label != s.kind]
    if variants:
        out.append("variants vs their plain server (same run):")
        for v in variants:
            env = ",".join(f"{k}={val}" for k, val in v.env.items())
            parts = [
                f"{name} {ratio(get(v.label, scen, key), get(v.kind, scen, key))}"
                for name, scen, key in (
                    ("deliveries/s", "fanout", "deliveries_per_s"),
                    ("p99", "fanout", "p99_ms"),
                    ("half p99", "fanout", "half_p99_ms"),
                    ("ping p50", "ping", "p50_ms"),
                    ("KiB/conn", "memory", "kib_per_conn"),
                )
            ]
            out.append(f"  {v.label} ({env}): " + "  ".join(parts))
    return out


def node_note(r: dict[str, Any]) -> str:
    """Per node of the 2-node run: its clients' deliveries/s, latencies, losses; CPU."""
    parts = []
    for i, g in enumerate(r["groups"]):
        if "node" in g:
            how = "publisher's node" if g["node"] == "bench1" else "through Redis"
            name = g["node"]
        else:  # --receiver-groups on one server: clients in join order
            how, name = "one node", f"receiver group {i + 1}"
        parts.append(
            f"{name} ({how}, {g['clients']} clients): "
            f"{g['deliveries_per_s']:,}/s, p50/p99 {g['p50_ms']:.2f}/{g['p99_ms']:.2f} ms, "
            f"half {g['half_p50_ms']:.2f}/{g['half_p99_ms']:.2f} ms, lost {g['lost']}"
        )
    cpu = r.get("server_cpu_parts", {})
    cores = r.get("cluster_cores", {})
    if cpu:
        parts.append(
            "server_cpu "
            + ", ".join(f"{k} {v:.0f}% (core {cores.get(k, '?')})" for k, v in cpu.items())
        )
    return "; ".join(parts)


def two_node_summary(
    results: dict[str, dict[str, dict[str, Any]]],
    runs: dict[str, dict[str, list[dict[str, Any]]]] | None = None,
) -> dict[str, Any] | None:
    """The 2-node run against the single-node one: the ratio, and the lines saying it.

    When node 1, node 2 and redis-server all ran on the single node's core, the ratio of
    deliveries/s is a ratio per server core. Otherwise it is not, and the ratio of
    deliveries per server CPU-second is the better comparison (still not a clean one:
    on two cores the cluster then shares the generator's core). The ratio is of the best
    runs; with ``--repeat`` the ratio within each repetition (the two ran back to back)
    is listed too, since the machine's speed drifts between repetitions.
    """
    two = results.get(CLUSTER, {}).get("fanout")
    if not two or "deliveries_per_s" not in two:
        return None
    one = results.get("switchboard", {}).get("fanout", {})
    cores = two.get("cluster_cores", {})
    same_core = len(set(cores.values())) == 1 and (
        not one or set(cores.values()) == {two.get("single_node_core")}
    )
    same_core = same_core and two.get("gen_core") not in cores.values()
    d2 = two["deliveries_per_s"]
    d1 = one.get("deliveries_per_s")
    summary: dict[str, Any] = {"same_core": same_core, "cluster_cores": cores}
    lines = []
    if d1:
        rate_ratio = d2 / d1
        cpu_ratio = (d2 / max(two["server_cpu"], 1e-9)) / (d1 / max(one["server_cpu"], 1e-9))
        summary.update(
            deliveries_ratio=round(rate_ratio, 3), per_server_cpu_second_ratio=round(cpu_ratio, 3)
        )
        where = ", ".join(f"{k} on core {v}" for k, v in cores.items())

        def clean(r: dict[str, Any]) -> bool:  # no other load, generator not the limit
            return not any(x in r.get("bottleneck", "") for x in ("DISTURBED", "GENERATOR"))

        paired = [
            (b["deliveries_per_s"] / a["deliveries_per_s"], clean(a) and clean(b))
            for a, b in zip(
                (runs or {}).get("switchboard", {}).get("fanout", []),
                (runs or {}).get(CLUSTER, {}).get("fanout", []),
                strict=False,
            )
            if a.get("deliveries_per_s") and b.get("deliveries_per_s")
        ]
        paired_text = ""
        if len(paired) > 1:
            ok = [x for x, good in paired if good]
            median = statistics.median(ok or [x for x, _ in paired])
            summary["paired_ratios"] = [round(x, 3) for x, _ in paired]
            summary["paired_disturbed"] = [not good for _, good in paired]
            summary["paired_ratio_median"] = round(median, 3)
            paired_text = (
                "; run by run: "
                + ", ".join(f"{x:.2f}" + ("" if good else " (disturbed)") for x, good in paired)
                + f"; median{' of undisturbed' if ok and len(ok) < len(paired) else ''} "
                f"{median:.2f}"
            )
        if same_core:
            summary["per_server_core_ratio"] = round(rate_ratio, 3)
            lines.append(
                f"2-node/1-node per server core = {rate_ratio:.2f}×  (best runs: {CLUSTER} "
                f"{d2:,} vs switchboard {d1:,} deliveries/s, each on one server core, core "
                f"{two.get('single_node_core')}; target >= 0.80×{paired_text})"
            )
        else:
            lines.append(
                f"2-node/1-node deliveries/s = {rate_ratio:.2f}×  NOT per server core: {where}, "
                f"generator on core {two.get('gen_core')}; per server CPU-second "
                f"{cpu_ratio:.2f}×{paired_text}"
            )
    groups = two.get("groups") or []
    if len(groups) == 2:
        a, b = groups
        lines.append(
            f"cross-node latency ({CLUSTER}), p50/p99 ms: through Redis ({b.get('node')}) "
            f"{b['p50_ms']:.2f}/{b['p99_ms']:.2f}, local ({a.get('node')}) "
            f"{a['p50_ms']:.2f}/{a['p99_ms']:.2f} saturated; at half rate "
            f"{b['half_p50_ms']:.2f}/{b['half_p99_ms']:.2f} vs "
            f"{a['half_p50_ms']:.2f}/{a['half_p99_ms']:.2f}"
            + (
                f"; single node {one['half_p50_ms']:.2f}/{one['half_p99_ms']:.2f}"
                if "half_p50_ms" in one
                else ""
            )
        )
    summary["lines"] = lines
    return summary


# --------------------------------------------------------------------------- main
def parse_variant(text: str) -> ServerSpec:
    label, sep, assignments = text.partition(":")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"expected LABEL:ENV=VAL[,ENV2=VAL2], got {text!r}")
    env = {}
    for item in filter(None, assignments.split(",")):
        k, eq, v = item.partition("=")
        if not eq:
            raise argparse.ArgumentTypeError(f"expected ENV=VAL in {text!r}, got {item!r}")
        env[k.strip()] = v
    if label.startswith("2node-"):  # a variant of the 2-node cluster
        return ServerSpec(label=f"{CLUSTER}:{label[6:]}", kind=CLUSTER, env=env)
    return ServerSpec(label="switchboard:" + label, kind="switchboard", env=env)


def csv(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {','.join(choices)}")
        return items

    return parse


def core_list(text: str) -> list[int]:
    try:
        cores = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N1,N2[,REDIS] core numbers: {text!r}") from None
    if len(cores) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected 2 or 3 cores, got {text!r}")
    if len(cores) == 2:
        cores.append(cores[0])  # redis-server next to node 1, the publishing node
    bad = [c for c in cores if not 0 <= c < (os.cpu_count() or 1)]
    if bad:
        raise argparse.ArgumentTypeError(f"no such core: {bad}")
    return cores


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Fan-out throughput, ping latency and idle memory: switchboard vs baselines.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = p.add_argument
    add("--servers", type=csv(ALL_SERVERS), default=",".join(ALL_SERVERS), help="comma-separated")
    add(
        "--scenarios",
        type=csv(ALL_SCENARIOS),
        default=",".join(ALL_SCENARIOS),
        help="comma-separated",
    )
    add(
        "--variant",
        type=parse_variant,
        action="append",
        default=[],
        metavar="LABEL:ENV=VAL[,ENV=VAL]",
        help="extra switchboard run with extra env (repeatable); a LABEL starting with "
        "2node- is a run of switchboard-2node",
    )
    add("--json", type=Path, help="also write all results to this file")
    add(
        "--repeat",
        type=int,
        default=1,
        help="run each scenario N times per server, interleaved; report the best run",
    )
    g = p.add_argument_group("fan-out (scenario A)")
    g.add_argument("--clients", type=int, default=1000, help="clients in the room")
    g.add_argument("--duration", type=float, default=10.0, help="measuring seconds")
    g.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    g.add_argument("--window", type=int, default=10, help="broadcasts in flight")
    g.add_argument(
        "--half-seconds",
        type=float,
        default=4.0,
        help="open-loop phase at half the saturated rate (0: skip)",
    )
    g.add_argument("--payload-bytes", type=int, default=64, help="padding in each message")
    g.add_argument(
        "--give-up",
        type=float,
        default=5.0,
        help="a broadcast still incomplete after this long leaves the window",
    )
    g.add_argument(
        "--drain", type=float, default=5.0, help="seconds to wait for in-flight broadcasts"
    )
    g.add_argument(
        "--receiver",
        choices=["auto", "c", "python"],
        default="auto",
        help="receive loop: C (pump.c via ctypes) or Python; auto = C if it compiles",
    )
    g.add_argument(
        "--poll-ms",
        type=float,
        default=1.0,
        help="read sockets at most once per interval (latencies gain up to this)",
    )
    g.add_argument(
        "--receiver-groups",
        type=int,
        default=1,
        help="single-server runs: read the clients with this many receivers, as the 2-node "
        "run does with 2 (one per node); a check that the arrangement changes nothing",
    )
    g = p.add_argument_group("ping (scenario B) and memory (scenario C)")
    g.add_argument("--ping-seconds", type=float, default=3.0)
    g.add_argument("--mem-clients", type=int, default=5000)
    g.add_argument(
        "--mem-room-size",
        type=int,
        default=100,
        help="clients per room (0: all in room:mem; with presence, joins cost O(N^2))",
    )
    g.add_argument("--settle", type=float, default=3.0, help="idle seconds before reading RSS")
    g = p.add_argument_group("environment")
    g.add_argument("--connect-concurrency", type=int, default=100)
    g.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        help="before each run, wait up to this long for both cores to go idle",
    )
    g.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling priority of server and generator; e.g. -10 (root) makes other work "
        "on a shared machine disturb the runs less, and slows that work down",
    )
    g.add_argument("--server-core", type=int, default=0)
    g.add_argument("--gen-core", type=int, default=1)
    g.add_argument(
        "--cluster-cores",
        type=core_list,
        metavar="N1,N2[,REDIS]",
        help="cores of switchboard-2node's node 1, node 2 and redis-server (default: all on "
        "--server-core, which makes its rate comparable per server core; other placements "
        "share the generator's core on a 2-core machine)",
    )
    g.add_argument("--logdir", type=Path, help="keep server logs here (default: a temp dir)")
    return p.parse_args(argv)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    specs: list[ServerSpec] = []
    skipped: list[str] = []
    for kind in sorted(args.servers, key=ALL_SERVERS.index):  # 2-node right after 1-node
        if kind in ("switchboard", CLUSTER) and not switchboard_available():
            skipped.append(f"{kind} (server/cli.py or .venv/bin/switchboard missing)")
            continue
        if kind == CLUSTER and redis_server_bin() is None:
            skipped.append(f"{kind} (redis-server not installed)")
            continue
        specs.append(ServerSpec(label=kind, kind=kind))
    if any(s.kind == CLUSTER for s in specs) and set(args.scenarios) - {"fanout"}:
        print(f"note: {CLUSTER} runs the fan-out scenario only")
    if args.variant:
        if not switchboard_available():
            skipped.append("variants (switchboard missing)")
        elif any(v.kind == CLUSTER for v in args.variant) and redis_server_bin() is None:
            skipped.append("variants (redis-server not installed)")
        else:
            specs.extend(args.variant)
    for s in skipped:
        print(f"skipping {s}")

    logdir = args.logdir or Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    logdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict[str, Any]]] = {s.label: {} for s in specs}
    started = perf_counter()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {s.label: {} for s in specs}
    # scenario-major order, so a variant and its baseline run close together in time;
    # repeats interleave the servers, so slow drifts hit all of them alike
    for scen in args.scenarios:
        for rep in range(args.repeat):
            # A B, B A, A B, ...: a steady drift of the machine's speed favours nobody
            for spec in specs if rep % 2 == 0 else specs[::-1]:
                if spec.kind == CLUSTER and scen != "fanout":
                    continue
                if args.quiet_wait > 0:
                    busy = await wait_quiet(args.quiet_wait, (args.server_core, args.gen_core))
                    if busy >= QUIET:
                        print(
                            f"         (a core is still {busy:.0f}% busy after "
                            f"{args.quiet_wait}s; going on)"
                        )
                t = perf_counter()
                tag = f" #{rep + 1}" if args.repeat > 1 else ""
                print(
                    f"[{perf_counter() - started:6.1f}s] {scen:<7} {spec.label}{tag} ...",
                    flush=True,
                )
                try:
                    r = await SCENARIOS[scen](spec, args, logdir)
                except Exception as exc:  # noqa: BLE001 - report and go on with the next run
                    r = {"server": spec.label, "error": f"{type(exc).__name__}: {exc}"}
                runs[spec.label].setdefault(scen, []).append(r)
                results[spec.label][scen] = pick_run(scen, runs[spec.label][scen])
                brief = {k: v for k, v in r.items() if k != "server"}
                print(f"         {perf_counter() - t:5.1f}s {json.dumps(brief)[:400]}", flush=True)

    lines = report(results, specs, runs)
    cluster = ""
    if any(s.kind == CLUSTER for s in specs):
        n1, n2, rd = args.cluster_cores or [args.server_core] * 3
        cluster = f"; {CLUSTER}: node 1 on core {n1}, node 2 on core {n2}, redis on core {rd}"
    lines.append(
        f"(server on core {args.server_core}, generator on core {args.gen_core}{cluster}; "
        f"cpu 100% = one core; total {perf_counter() - started:.0f}s; server logs in {logdir})"
    )
    print("\n".join(lines))
    return {
        "argv": sys.argv[1:],
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k != "variant"
        },
        "variants": {s.label: s.env for s in specs if s.env},
        "skipped": skipped,
        "results": results,
        "two_node": {
            k: v for k, v in (two_node_summary(results, runs) or {}).items() if k != "lines"
        }
        or None,
        "all_runs": runs if args.repeat > 1 else None,
        "summary": lines,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        os.sched_setaffinity(0, {args.gen_core})
    except OSError as exc:
        print(f"warning: could not pin the generator to core {args.gen_core}: {exc}")
    raise_nofile()
    if args.nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
            ServerProcess.nice = args.nice
        except OSError as exc:
            print(f"warning: --nice {args.nice} not permitted ({exc}); running at normal priority")
    need = max(args.clients, args.mem_clients) + 100
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        print(f"warning: RLIMIT_NOFILE {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} < {need}")

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # at once, even inside the blocking fan-out loop
    try:
        out = asyncio.run(amain(args))
    except KeyboardInterrupt:
        print("\ninterrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        ServerProcess.stop_all()
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
