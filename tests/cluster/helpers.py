"""Helpers for the cluster tests: a LocalCluster per module, phoenix.js clients bound to
chosen loopback source addresses, and waits on what they report.

nginx balances with ``hash $remote_addr consistent``; every client (and every HTTP probe)
binds its own 127.0.0.N, so :func:`addresses_by_node` can ask nginx where each address
lands and tests pick addresses that put clients on the node they want.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from switchboard.presence.tracker import node_name
from switchboard.server.auth import issue_token
from switchboard.server.devcluster import LocalCluster, Node
from tests.support.phoenix_agent import Agent

API_KEY = "cluster-test-api-key-" + uuid.uuid4().hex
WAIT = 8.0  # bound on any wait that has no tighter budget of its own
CANDIDATES = [f"127.0.0.{n}" for n in range(2, 34)]

# Every test polls the nodes' HTTP API from 127.0.0.1 and reconnects clients in bursts:
# lift the per-IP rate limits (the per-user socket limit stays on).
BASE_ENV = {
    "SWITCHBOARD_API_KEY": API_KEY,
    "SWITCHBOARD_HTTP_RATE": "100000,100000",
    "SWITCHBOARD_CONNECT_RATE": "100000,100000",
}

# -- the cluster ------------------------------------------------------------------------------


@contextlib.contextmanager
def running_cluster(env: dict[str, str], nodes: int = 2) -> Iterator[LocalCluster]:
    cluster = LocalCluster(nodes, node_env={**BASE_ENV, **env})
    try:
        cluster.start()
        wait_for(
            "every node hears the others",
            lambda: all(len(runtime(node)["peers"]) == nodes - 1 for node in cluster.nodes),
        )
        home_nodes(cluster)
        yield cluster
    finally:
        _HOMES.pop(str(cluster.run_dir), None)
        cluster.stop()
        shutil.rmtree(cluster.run_dir, ignore_errors=True)


def revive(cluster: LocalCluster) -> None:
    """Restart whatever a failed test left dead (Redis; nodes on their ports), so the
    module's next test starts from a whole cluster."""
    if cluster.redis is not None and cluster.redis.poll() is not None:
        cluster.restart_redis()
    for dead in [n for n in cluster.nodes if n.process.poll() is not None]:
        cluster.start_node(dead.name, dead.port)
    wait_for(
        "every node ready and hearing the other",
        lambda: all(
            ready(n).status_code == 200 and len(runtime(n)["peers"]) == len(cluster.nodes) - 1
            for n in cluster.nodes
        ),
    )


def by_name(cluster: LocalCluster, name: str) -> Node:
    """The cluster's current node of that name (a restart replaces the Node)."""
    return next(n for n in cluster.nodes if n.name == name)


def log_of(cluster: LocalCluster, name: str) -> str:
    path = cluster.run_dir / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def log_events(cluster: LocalCluster, name: str) -> list[dict[str, Any]]:
    entries = []
    for line in log_of(cluster, name).splitlines():
        with contextlib.suppress(ValueError):
            entries.append(json.loads(line))
    return entries


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float = WAIT,
    every: float = 0.05,
    detail: Callable[[], object] | None = None,
) -> Any:
    """Poll ``check`` (an HTTP observable) until it returns something truthy, bounded.

    On a timeout the failure shows ``detail()`` if given, else the last value checked.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            shown = detail() if detail is not None else last
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {shown!r}")
        time.sleep(every)


def runtime(node: Node) -> dict[str, Any]:
    response = httpx.get(f"{node.url}/test/runtime", timeout=WAIT)
    response.raise_for_status()
    return dict(response.json())


def api(node: Node, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    return httpx.request(method, f"{node.url}{path}", headers=headers, timeout=WAIT, **kwargs)


def presences(node: Node, topic: str) -> dict[str, Any]:
    response = api(node, "GET", f"/api/presence/{topic}")
    response.raise_for_status()
    return dict(response.json()["presences"])


def sockets_by_user(node: Node) -> dict[str, list[str]]:
    """user -> names of the nodes holding its sockets, from the ``connections`` topic."""
    found: dict[str, list[str]] = {}
    for key, presence in presences(node, "connections").items():
        user = key.removeprefix("users_socket:")
        found[user] = sorted(node_name(str(meta["node"])) for meta in presence["metas"])
    return found


def ready(node: Node) -> httpx.Response:
    return httpx.get(f"{node.url}/health/ready", timeout=WAIT)


def routed_to(cluster: LocalCluster, address: str) -> str | None:
    """The node nginx sends a request from ``address`` to right now (None if refused)."""
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(transport=transport, timeout=WAIT) as client:
        response = client.get(f"{cluster.url}/health/ready")
    return node_name(response.json()["node"]) if response.status_code == 200 else None


def home_nodes(cluster: LocalCluster) -> dict[str, str]:
    """Source address -> the node nginx sends it to while every node is up.

    Probed once per cluster, right after it started (all nodes healthy): with ``hash
    $remote_addr consistent`` the answer depends only on the upstream servers, which keep
    their ports across restarts.
    """
    key = str(cluster.run_dir)
    if key not in _HOMES:
        found = {address: routed_to(cluster, address) for address in CANDIDATES}
        _HOMES[key] = {address: name for address, name in found.items() if name is not None}
    return _HOMES[key]


_HOMES: dict[str, dict[str, str]] = {}


def addresses_by_node(
    cluster: LocalCluster, per_node: int, timeout: float = WAIT
) -> dict[str, list[str]]:
    """``per_node`` source addresses per node whose requests nginx sends to that node.

    Waits until nginx routes each of them home again: after a node failed, nginx skips it
    for ``fail_timeout`` and sends its addresses elsewhere.
    """
    homes = home_nodes(cluster)
    chosen = {
        node.name: [a for a, name in homes.items() if name == node.name][:per_node]
        for node in cluster.nodes
    }
    assert all(len(found) == per_node for found in chosen.values()), (
        f"nginx spreads too few of {len(CANDIDATES)} addresses to some node: {homes}"
    )
    wait_for(
        f"nginx routes {chosen} home",
        lambda: all(
            routed_to(cluster, address) == name
            for name, addresses in chosen.items()
            for address in addresses
        ),
        timeout,
        every=0.2,
    )
    return chosen


# -- phoenix.js clients -------------------------------------------------------------------------


@contextlib.contextmanager
def agent_for(cluster: LocalCluster) -> Iterator[Agent]:
    """An agent whose clients connect through the cluster's nginx (with the default
    reconnect backoff) and bind the source addresses they are given."""
    endpoint = f"ws://127.0.0.1:{cluster.nginx_port}/socket"
    agent = Agent(endpoint, lambda user: issue_token(cluster.secret, user), wait=WAIT)
    try:
        yield agent
    finally:
        agent.close()


# -- presence lists -----------------------------------------------------------------------------


def one_each(users: list[str]) -> dict[str, int]:
    return dict.fromkeys(users, 1)


def diff_refs(agent: Agent, id: str, topic: str, side: str, since: int = 0) -> Counter[str]:
    """phx_ref -> how many presence_diff frames the client got with it in ``side``
    (``joins`` or ``leaves``) since ``since``."""
    return Counter(
        meta["phx_ref"]
        for event in agent.of(id, "frame", since, topic=topic, event="presence_diff")
        for presence in event["data"][side].values()
        for meta in presence["metas"]
    )
