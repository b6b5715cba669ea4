"""Scenario B, ping (``ping``).

One client on an otherwise idle server sends a request and waits for the
reply, sequentially, for ``--ping-seconds``: switchboard ``ping`` ->
``phx_reply``; a socket.io event with an ack; the websockets server echoes
(a broadcast to its only connection). Round-trip p50/p99 after 50 warm-ups.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path
from time import perf_counter
from typing import Any

from .clients import open_clients
from .leanws import WSClient
from .metering import Meter, pct
from .processes import ServerProcess, ServerSpec


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
