"""The tables of the Node-generated scenarios (joinstorm, reqreply, connrate, idle50k), each
followed by Switchboard's ratio to every other server measured in the same run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Results = dict[str, dict[str, Any]]  # label -> that server's result for one scenario


def _flag(r: dict[str, Any]) -> str:
    note = r.get("bottleneck") or r.get("connect_bottleneck") or ""
    flags = [word for word in ("DISTURBED", "GENERATOR") if word in note]
    return ("  " + ", ".join(flags)) if flags else ""


def _ratios(rows: Results, key: Callable[[dict[str, Any]], Any], lower_is_better: bool) -> str:
    base = rows.get("switchboard")
    mine = key(base) if base else None
    if not isinstance(mine, (int, float)) or not mine:
        return ""
    parts = []
    for label, r in rows.items():
        theirs = key(r)
        if label != "switchboard" and isinstance(theirs, (int, float)) and theirs:
            parts.append(f"switchboard/{label} = {mine / theirs:.2f}x")
    better = "lower" if lower_is_better else "higher"
    return ("  ratios: " + "  ".join(parts) + f"  ({better} is better)") if parts else ""


def _error(label: str, r: dict[str, Any], w: int) -> str:
    return f"{label:<{w}}ERROR: {str(r.get('error', '?')).splitlines()[0][:160]}"


def joinstorm(rows: Results, w: int) -> list[str]:
    first = next(iter(rows.values()))
    out = [
        f"joinstorm: {first.get('clients', '?')} clients join one room at once; seconds until "
        "all joined, and (presence on) until every presence list is exact",
        f"{'server':<{w}}{'joined s':>9}{'exact s':>9}{'presence frames':>16}{'per client':>11}"
        f"{'phoenix.js ok':>14}{'server_cpu':>11}{'gen_cpu':>8}",
    ]
    for label, r in rows.items():
        if "joins_failed" not in r:
            out.append(_error(label, r, w))
            continue
        exact, joined = r.get("exact_s"), r.get("joined_s")
        out.append(
            f"{label:<{w}}{joined if joined is not None else '-':>9}"
            f"{exact if exact is not None else '-':>9}"
            f"{r.get('presence_frames', '-'):>16}{r.get('presence_frames_per_client', '-'):>11}"
            f"{r.get('samples_exact', '-'):>14}{r['server_cpu']:>10.0f}%{r['gen_cpu']:>7.0f}%"
            + _flag(r)
            + (f"  ERROR: {r['error'][:120]}" if "error" in r else "")
        )
    out.append(_ratios(rows, lambda r: r.get("exact_s") or r.get("joined_s"), True))
    return out


def reqreply(rows: Results, w: int) -> list[str]:
    first = next(iter(rows.values()))
    out = [
        f"reqreply: {first.get('clients', '?')} clients, closed-loop request/reply",
        f"{'server':<{w}}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'server_cpu':>11}{'gen_cpu':>8}",
    ]
    for label, r in rows.items():
        if "requests_per_s" not in r:
            out.append(_error(label, r, w))
            continue
        out.append(
            f"{label:<{w}}{r['requests_per_s']:>10,}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}"
            f"{r['server_cpu']:>10.0f}%{r['gen_cpu']:>7.0f}%" + _flag(r)
        )
    out.append(_ratios(rows, lambda r: r.get("requests_per_s"), False))
    return out


def connrate(rows: Results, w: int) -> list[str]:
    out = [
        "connrate: connect + join (+ presence track) per socket, rooms of sockets/100",
        f"{'server':<{w}}{'sockets':>8}{'opens/s':>9}{'seconds':>9}{'refused':>9}{'failed':>7}"
        f"{'p99 ms':>9}{'server_cpu':>11}{'gen_cpu':>8}{'opens/cpu-s':>12}",
    ]
    sizes = sorted({size for r in rows.values() for size in r.get("sizes", {})}, key=int)
    for size in sizes:
        at_size = {lb: r["sizes"][size] for lb, r in rows.items() if size in r.get("sizes", {})}
        for label, r in at_size.items():
            statuses = ", ".join(f"HTTP {status}: {n}" for status, n in r["refused"].items())
            notes = [f"refused {statuses}"] if statuses else []
            if r["cut_to_fd_limit"]:
                notes.append(f"cut from {size} to the fd limit")
            out.append(
                f"{label:<{w}}{r['sockets']:>8}{r['opens_per_s']:>9,}{r['seconds']:>9.2f}"
                f"{r['refused_total']:>9}{r['failed']:>7}{r['p99_ms'] or 0:>9.0f}"
                f"{r['server_cpu']:>10.0f}%{r['gen_cpu']:>7.0f}%"
                f"{r.get('opens_per_cpu_s') or 0:>12,}"
                + _flag(r)
                + (f"  ({'; '.join(notes)})" if notes else "")
            )
        out.append(_ratios(at_size, lambda r: r.get("opens_per_s"), False))
        per_cpu = _ratios(at_size, lambda r: r.get("opens_per_cpu_s"), False)
        if per_cpu:
            out.append(per_cpu.replace("ratios:", "per server CPU-second:", 1))
    for label, r in rows.items():
        if "sizes" not in r:
            out.append(_error(label, r, w))
    return out


def idle(rows: Results, w: int) -> list[str]:
    first = next(iter(rows.values()))
    out = [
        f"idle50k: joined sockets idling with heartbeats for {first.get('idle_seconds', '?')} s",
        f"{'server':<{w}}{'sockets':>8}{'KiB/socket':>11}{'RSS MiB':>9}{'still up':>9}",
    ]
    for label, r in rows.items():
        if "kib_per_socket" not in r:
            out.append(_error(label, r, w))
            continue
        cut = (
            f"  (cut from {r['sockets_wanted']:,} to the fd limit)" if r["cut_to_fd_limit"] else ""
        )
        out.append(
            f"{label:<{w}}{r['sockets']:>8}{r['kib_per_socket']:>11.1f}{r['rss_after_mib']:>9.0f}"
            f"{r['alive_after_idle']:>9}" + _flag(r) + cut
        )
    out.append(_ratios(rows, lambda r: r.get("kib_per_socket"), True))
    return out


TABLES = {"joinstorm": joinstorm, "reqreply": reqreply, "connrate": connrate, "idle50k": idle}
