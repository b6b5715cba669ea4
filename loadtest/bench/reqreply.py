"""Scenario ``reqreply``: C clients (``--rr-clients``, 50) in a closed request/reply loop.

Each client joins a room, then pings, waits for the answer, pings again, for ``--rr-seconds``
(10) after ``--rr-warmup`` (2): switchboard's ``ping`` with its ``phx_reply``, a socket.io
event with an ack, a websockets echo. Requests per second over all clients, and the
round-trip p50/p99. The generator is Node; with 50 clients in flight the server is the limit
unless the report says the generator's core was saturated.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .metering import Meter, cpu_summary
from .nodegen import generating
from .processes import ServerSpec


async def run_reqreply(spec: ServerSpec, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    n = args.rr_clients
    async with generating(spec, args.server_core, args.gen_core, logdir, n) as (sp, gen):
        [connected] = await gen.command("connect", room="rr")
        if connected["ok"] < n:
            raise RuntimeError(f"only {connected['ok']}/{n} joined: {connected}")
        meter = Meter(sp, args.server_core, args.gen_core, gen.cpu)
        [rr] = await gen.command(
            "reqreply",
            timeout=args.rr_seconds + args.rr_warmup + 60,
            seconds=args.rr_seconds,
            warmup=args.rr_warmup,
        )
        m = meter.stop()
    result: dict[str, Any] = {
        "server": spec.label,
        "clients": n,
        "requests_per_s": round(rr["per_s"]),
        "p50_ms": round(rr["p50_ms"], 3),
        "p99_ms": round(rr["p99_ms"], 3),
        "errors": rr["errors"],
        **cpu_summary(m),
    }
    if rr["errors"]:
        result["error"] = f"{rr['errors']} requests failed: {rr['first_error']}"
    return result
