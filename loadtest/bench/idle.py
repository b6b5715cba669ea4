"""Scenario ``idle50k``: many joined sockets sitting idle, heartbeating like phoenix.js.

``--idle-sockets`` (50,000) sockets connect and join rooms of 100; the generator sends each
Phoenix socket a heartbeat every 30 s. After ``--settle`` s the server's RSS is read: KiB per
socket = (after - before) ÷ sockets. Then they idle for ``--idle-seconds`` (70: longer than
the server's 60 s idle timeout, so a socket whose heartbeats went unanswered would be gone)
and every socket must still be up.

What it needs: one fd per socket on the server (a hard RLIMIT_NOFILE of at least sockets +
200; raise it with ``ulimit -Hn``, systemd's LimitNOFILE or docker's ``--ulimit nofile``:
the bench raises only the soft limit) and on the generator (split over several processes
when one cannot hold them all), and ephemeral ports: the generator cycles through source
addresses 127.0.0.1, .2, ... (15,000 sockets each). With a smaller hard limit the number of
sockets is cut to what fits, and the report says so.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from .metering import Meter, cpu_summary
from .nodegen import generating, max_sockets
from .processes import ServerSpec


async def run_idle(spec: ServerSpec, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    wanted = args.idle_sockets
    n = min(wanted, max_sockets())
    rooms = max(1, n // 100)
    async with generating(
        spec, args.server_core, args.gen_core, logdir, n, concurrency=args.conn_concurrency
    ) as (sp, gen):
        await asyncio.sleep(1.0)
        before = sp.rss()
        meter = Meter(sp, args.server_core, args.gen_core, gen.cpu)
        answers = await gen.command("connect", room="idle", rooms=rooms)
        m = meter.stop()
        opened = sum(a["ok"] for a in answers)
        await asyncio.sleep(args.settle)
        after = sp.rss()
        await asyncio.sleep(args.idle_seconds)
        status = await gen.command("status")
        alive = sum(s["alive"] for s in status)
    result: dict[str, Any] = {
        "server": spec.label,
        "sockets_wanted": wanted,
        "sockets": n,
        "cut_to_fd_limit": n < wanted,
        "opened": opened,
        "refused": sum(sum(a["refused"].values()) for a in answers),
        "failed": sum(a["failed"] for a in answers),
        "first_error": next((a["first_error"] for a in answers if a["first_error"]), None),
        "alive_after_idle": alive,
        "idle_seconds": args.idle_seconds,
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "kib_per_socket": round((after - before) / 1024 / max(1, opened), 1),
        "generator_processes": gen.processes,
        "source_addresses": len(gen.addresses),
        **{f"connect_{k}": v for k, v in cpu_summary(m).items()},
    }
    if opened < n or alive < opened:
        result["error"] = f"{opened}/{n} opened, {alive} still up after {args.idle_seconds}s"
    return result
