"""What a run cost each side, and whether other work disturbed it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from time import perf_counter
from typing import Any, Protocol

import psutil

FULL = 85.0  # % of a core busy (processes + interrupts): it is saturated
OTHER_LOAD = 15.0  # % of a full core taken by processes other than ours: numbers disturbed
QUIET = 20.0  # % busy below which a core counts as idle before a run


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


def own_cpu() -> tuple[float, float]:
    """(CPU seconds, of which kernel) of this process: the Python generator."""
    t = os.times()
    return t.user + t.system, t.system


class Meter:
    """CPU of both sides over one interval, and what else ran on their cores.

    ``generator`` gives the generator's (CPU seconds, kernel seconds): this process by
    default, the Node generator's processes when it does the work.
    """

    def __init__(
        self,
        sp: CpuSource,
        server_core: int,
        gen_core: int,
        generator: Callable[[], tuple[float, float]] = own_cpu,
    ) -> None:
        self.sp = sp
        self.cores = (server_core, gen_core)
        self.generator = generator
        self.wall = perf_counter()
        self.gen, self.gen_sys = generator()
        self.parts = sp.cpu_parts()
        self.core0 = [_core_times(c) for c in self.cores]

    def stop(self) -> dict[str, float]:
        """Percentages of a core; ``cpu:<name>`` for each server process when there are
        several (a process pinned to a core counts as ours in that core's other load)."""
        wall = perf_counter() - self.wall
        gen_total, gen_kernel = self.generator()
        gen = (gen_total - self.gen) / wall * 100
        gen_sys = (gen_kernel - self.gen_sys) / wall * 100
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
    """Of repeated runs, the one to report: the fastest fan-out, ping, join storm,
    request/reply and connection rate (interference only ever slows a run down), the median
    memory reading."""
    ok = [r for r in runs if "error" not in r or len(r) > 2] or runs
    if scenario == "fanout":
        best = max(ok, key=lambda r: r.get("deliveries_per_s", -1))
        rates = [r["deliveries_per_s"] for r in ok if "deliveries_per_s" in r]
        if len(rates) > 1:
            best = {**best, "deliveries_per_s_all": rates}
    elif scenario == "ping":
        best = min(ok, key=lambda r: r.get("p50_ms", float("inf")))
    elif scenario == "joinstorm":
        best = min(ok, key=lambda r: r.get("exact_s") or r.get("joined_s") or float("inf"))
    elif scenario == "reqreply":
        best = max(ok, key=lambda r: r.get("requests_per_s", -1))
    elif scenario == "connrate":
        best = max(ok, key=lambda r: min(_opens(r), default=-1))
    elif scenario == "idle50k":
        best = sorted(ok, key=lambda r: r.get("kib_per_socket", 0.0))[len(ok) // 2]
    else:
        best = sorted(ok, key=lambda r: r.get("kib_per_conn", 0.0))[len(ok) // 2]
    return {**best, "runs": len(runs)} if len(runs) > 1 else best


def _opens(r: dict[str, Any]) -> list[float]:
    return [size["opens_per_s"] for size in r.get("sizes", {}).values()]


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


def cpu_summary(m: dict[str, float]) -> dict[str, Any]:
    """The Meter's numbers a scenario reports, rounded, with the bottleneck note."""
    return {
        "server_cpu": round(m["server_cpu"], 1),
        "gen_cpu": round(m["gen_cpu"], 1),
        "gen_sys_cpu": round(m["gen_sys_cpu"], 1),
        "other_load_server_core": round(m["other_server_core"], 1),
        "other_load_gen_core": round(m["other_gen_core"], 1),
        "irq_server_core": round(m["irq_server_core"], 1),
        "irq_gen_core": round(m["irq_gen_core"], 1),
        "idle_server_core": round(m["idle_server_core"], 1),
        "idle_gen_core": round(m["idle_gen_core"], 1),
        "bottleneck": bottleneck(m),
    }
