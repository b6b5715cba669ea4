"""Scenario ``joinstorm``: N clients (``--storm-clients``, 5000) join one room at once.

All N connect first (not timed); then every one of them sends its join in the same instant
and we time (from the first join sent) until every join is answered ok ("joined") and, when
the server tracks presence (switchboard unless ``SWITCHBOARD_PRESENCE=off``), until every
client's presence list holds all N + S users ("exact"). Each raw client applies
presence_state and presence_diff as phoenix.js does (diffs wait for the state) into a
bitmap of users; S real phoenix.js clients (``--storm-sample``, 10) join alongside and are
checked with ``Presence.list()``. Presence frames received by the raw clients are counted:
N + S clients joining one by one cost at least one state each, and each diff reaches
everyone already in the room.

socket.io peers: a ``join`` event with an ack enters the room; bare websockets: one echoed
message (it has no rooms).

``switchboard-2node``: the same storm split over two nodes sharing a private Redis (the
first half of the clients on node 1, with the phoenix.js sample, the rest on node 2), each
client's list exact when it holds the users of both nodes.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from .cluster import Cluster
from .metering import CpuSource, Meter, cpu_summary
from .nodegen import NodeGenerator, generating
from .processes import CLUSTER, ServerSpec

ROOM = "storm"


def tracks_presence(spec: ServerSpec) -> bool:
    return spec.protocol == "phoenix" and spec.env.get("SWITCHBOARD_PRESENCE", "on") != "off"


@asynccontextmanager
async def _cluster_generating(
    spec: ServerSpec, args: argparse.Namespace, logdir: Path, users: int, **options: Any
) -> AsyncIterator[tuple[CpuSource, NodeGenerator]]:
    """A fresh 2-node cluster and a Node generator whose processes split the users over its
    nodes; all stopped by PID on the way out."""
    cluster = Cluster(spec, args.cluster_cores or [args.server_core] * 3, logdir)
    gen: NodeGenerator | None = None
    try:
        await cluster.start()
        ports = [node.port for node in cluster.nodes]
        gen = NodeGenerator(
            spec,
            ports[0],
            users,
            args.gen_core,
            logdir,
            ports=ports,
            secret=cluster.secret,
            **options,
        )
        await gen.start()
        yield cluster, gen
    finally:
        if gen is not None:
            await gen.stop()
        cluster.stop()


async def run_joinstorm(spec: ServerSpec, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    n = args.storm_clients
    presence = tracks_presence(spec)
    sample = args.storm_sample if presence else 0
    options = {"presence_users": n + sample if presence else 0, "sample": sample}
    if spec.kind == CLUSTER:
        servers = _cluster_generating(spec, args, logdir, n, **options)
    else:
        servers = generating(spec, args.server_core, args.gen_core, logdir, n, **options)
    async with servers as (sp, gen):
        connected = await gen.command("connect")
        if sum(c["ok"] for c in connected) < n:
            raise RuntimeError(f"only {sum(c['ok'] for c in connected)}/{n} connected: {connected}")
        meter = Meter(sp, args.server_core, args.gen_core, gen.cpu)
        storm = await gen.command(
            "join_storm",
            timeout=args.storm_timeout + 60,
            room=ROOM,
            timeout_ms=args.storm_timeout * 1000,
        )
        m = meter.stop()
    t0 = min(s["t0"] for s in storm)
    exact = [s["exact_at"] for s in storm]
    joined = [s["joined_at"] for s in storm]
    result: dict[str, Any] = {
        "server": spec.label,
        "clients": n,
        "presence": presence,
        "joined_s": round((max(joined) - t0) / 1000, 2) if None not in joined else None,
        "joins_failed": sum(s["failed"] for s in storm),
        "closed": sum(s["closed"] for s in storm),
        "close_codes": {code: n for s in storm for code, n in s["close_codes"].items()},
        **cpu_summary(m),
    }
    if presence:
        result.update(
            exact_s=round((max(exact) - t0) / 1000, 2) if None not in exact else None,
            clients_exact=sum(s["clients_exact"] for s in storm),
            samples_exact=f"{sum(s['samples_exact'] for s in storm)}/{sample}",
            presence_frames=sum(s["presence_frames"] for s in storm),
            presence_frames_per_client=round(sum(s["presence_frames"] for s in storm) / n, 1),
            presence_mib=round(sum(s["presence_bytes"] for s in storm) / 2**20),
            unknown_keys=sum(s["unknown_keys"] for s in storm),
        )
        if None in exact:
            result["error"] = (
                f"presence not exact after {args.storm_timeout}s: "
                f"{result['clients_exact']}/{n} raw clients, {result['samples_exact']} phoenix.js"
            )
    if result["joins_failed"] or result["closed"] or result["joined_s"] is None:
        result["error"] = (
            f"{result['joins_failed']} joins failed, {result['closed']} sockets closed "
            f"(codes {result['close_codes']}), "
            f"all joined: {result['joined_s'] is not None}; first error: "
            f"{next((s['first_error'] for s in storm if s['first_error']), None)}"
        )
    return result
