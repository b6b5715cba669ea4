"""Scenario ``connrate``: how fast new sockets connect, join and are tracked.

For each size in ``--conn-sockets`` (5000,20000), a fresh server and that many sockets
opening at most ``--conn-concurrency`` (200) at a time, each joining one of
``--conn-rooms`` (100) rooms: switchboard's ``room:conn:<n % 100>`` (its join tracks
presence, so each join also costs a presence_state and a diff to the room), socket.io's
``join``; bare websockets only connects and echoes once. opens/s = sockets joined ÷ time from
the first connect to the last join reply. A refused upgrade is counted by its HTTP status
(429 rate-limited, 503 admission, 403 per-user limit); other failures (timeouts, resets)
apart. Run it with limits on through a variant, with the rates raised so none applies, e.g.
``--variant limits:SWITCHBOARD_LIMITS=on,SWITCHBOARD_CONNECT_RATE=1000000:1000000,...``.

A server holds one fd per socket: a size above its fd limit (here: the hard RLIMIT_NOFILE
less 200) is cut to it, and the report says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .metering import Meter, cpu_summary
from .nodegen import generating, max_sockets
from .processes import ServerSpec


async def run_connrate(spec: ServerSpec, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    sizes: dict[str, Any] = {}
    for wanted in args.conn_sockets:
        n = min(wanted, max_sockets())
        async with generating(
            spec, args.server_core, args.gen_core, logdir, n, concurrency=args.conn_concurrency
        ) as (sp, gen):
            meter = Meter(sp, args.server_core, args.gen_core, gen.cpu)
            answers = await gen.command("connect", room="conn", rooms=args.conn_rooms)
            m = meter.stop()
            rss = sp.rss()
        ok = sum(a["ok"] for a in answers)
        refused: dict[str, int] = {}
        for a in answers:
            for status, count in a["refused"].items():
                refused[status] = refused.get(status, 0) + count
        seconds = (max(a["ended"] for a in answers) - min(a["started"] for a in answers)) / 1000
        cpu = cpu_summary(m)
        busy = m["server_cpu"] * m["wall"] / 100  # server CPU-seconds over the metered run
        sizes[str(wanted)] = {
            "sockets": n,
            "cut_to_fd_limit": n < wanted,
            "opened": ok,
            "opens_per_s": round(ok / seconds),
            "seconds": round(seconds, 2),
            "refused": refused,
            "refused_total": sum(refused.values()),
            "failed": sum(a["failed"] for a in answers),
            "first_error": next((a["first_error"] for a in answers if a["first_error"]), None),
            "p50_ms": answers[0]["p50_ms"],
            "p99_ms": answers[0]["p99_ms"],
            "rss_mib": round(rss / 2**20, 1),
            # opens per second of server CPU: comparable where the generator, not the
            # server, set the pace (the opens/s of such a row understate the server)
            "opens_per_cpu_s": round(ok / busy) if busy else None,
            **cpu,
        }
    return {"server": spec.label, "sizes": sizes}
