"""Scenario A on two nodes (server ``switchboard-2node``, fan-out only).

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
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

from .clients import open_clients
from .fanout import FanoutLoop, fanout_result
from .flavors import Flavor, PhoenixFlavor
from .leanws import WSClient
from .processes import HOST, ServerProcess, ServerSpec

PROBE_NUMBER = re.compile(rb"\d+")


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
                # the digits only: the server may add fields after ours (room:* stamps "user")
                digits = PROBE_NUMBER.match(p, j + 8)
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
