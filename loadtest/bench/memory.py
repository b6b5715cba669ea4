"""Scenario C, idle memory (``memory``).

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
from pathlib import Path
from time import perf_counter
from typing import Any

from .clients import heartbeats, open_clients
from .leanws import WSClient
from .metering import Meter
from .processes import ServerProcess, ServerSpec


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
