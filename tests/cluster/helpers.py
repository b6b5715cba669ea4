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
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from presence.tracker import node_name
from server.auth import issue_token
from server.devcluster import ROOT, LocalCluster, Node

AGENT = Path(__file__).parent / "js" / "agent.js"
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

Event = dict[str, Any]
Listing = list[dict[str, Any]]


# -- the cluster ------------------------------------------------------------------------------


@contextlib.contextmanager
def running_cluster(env: dict[str, str]) -> Iterator[LocalCluster]:
    cluster = LocalCluster(2, node_env={**BASE_ENV, **env})
    try:
        cluster.start()
        wait_for(
            "both nodes hear each other",
            lambda: all(len(runtime(node)["peers"]) == 1 for node in cluster.nodes),
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


class Agent:
    """One Node process holding phoenix.js clients; ``events`` is everything it reported."""

    def __init__(self, cluster: LocalCluster) -> None:
        node_binary = shutil.which("node")
        if node_binary is None:
            pytest.fail("node is not installed")
        if not (ROOT / "node_modules" / "phoenix").is_dir():
            pytest.fail("node_modules lacks phoenix: run `npm ci` in the repository root")
        self.cluster = cluster
        self.events: list[Event] = []
        self.stderr: list[str] = []
        self.users: dict[str, str] = {}
        self._seq = 0
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [node_binary, str(AGENT), f"ws://127.0.0.1:{cluster.nginx_port}/socket"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._readers = [
            threading.Thread(target=self._read_events, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_events(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                event = json.loads(line)
                with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for line in self.process.stderr:
                self.stderr.append(line)

    def send(self, op: str, **fields: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()

    def wait_until(self, what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
        """Block until ``check()`` (run under the lock) returns something truthy."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                errors = [e for e in self.events if e["ev"] == "agent_error"]
                assert not errors, f"the Node agent failed: {errors}"
                result = check()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    tail = json.dumps(self.events[-15:], indent=1)
                    pytest.fail(
                        f"timed out after {timeout}s waiting for {what}\nlast events: {tail}\n"
                        f"stderr: {''.join(self.stderr)[-2000:]}",
                        pytrace=False,
                    )
                self._changed.wait(remaining)

    def wait_event(
        self, what: str, match: Callable[[Event], bool], since: int = 0, timeout: float = WAIT
    ) -> Event:
        def check() -> Event | None:
            return next((e for e in self.events[since:] if match(e)), None)

        return self.wait_until(what, check, timeout)  # type: ignore[no-any-return]

    def mark(self) -> int:
        with self._changed:
            return len(self.events)

    def of(self, id: str, ev: str, since: int = 0, **match: Any) -> list[Event]:
        with self._changed:
            return [
                e
                for e in self.events[since:]
                if e["id"] == id and e["ev"] == ev and all(e.get(k) == v for k, v in match.items())
            ]

    # -- client operations

    def connect(self, id: str, user: str, addr: str, wait: bool = True) -> None:
        self.users[id] = user
        since = self.mark()
        token = issue_token(self.cluster.secret, user)
        self.send("connect", id=id, token=token, addr=addr)
        if wait:
            self.wait_event(f"{id} open", lambda e: e["ev"] == "open" and e["id"] == id, since)

    def join(self, id: str, topic: str, wait: bool = True) -> Event | None:
        since = self.mark()
        self.send("join", id=id, topic=topic)
        if not wait:
            return None
        reply = self.wait_event(
            f"{id} join reply",
            lambda e: e["ev"] == "join" and e["id"] == id and e["topic"] == topic,
            since,
        )
        assert reply["status"] == "ok", reply
        return reply

    def push(self, id: str, topic: str, event: str, payload: Any = None) -> Event:
        self._seq += 1
        seq = self._seq
        self.send("push", id=id, topic=topic, event=event, payload=payload or {}, seq=seq)
        return self.wait_event(  # type: ignore[no-any-return]
            f"{id} reply to {event}", lambda e: e["ev"] == "reply" and e.get("seq") == seq
        )

    def shout(self, id: str, topic: str, n: int) -> None:
        """A ``shout`` (no reply; every member, sender included, gets it once)."""
        self.send("push", id=id, topic=topic, event="shout", payload={"from": id, "n": n}, seq=0)

    def list(self, id: str, topic: str) -> Listing:
        self._seq += 1
        seq = self._seq
        self.send("list", id=id, topic=topic, seq=seq)
        event = self.wait_event(
            f"{id} list", lambda e: e["ev"] == "list" and e["id"] == id and e["seq"] == seq
        )
        return list(event["list"])

    def wait_list(
        self,
        id: str,
        topic: str,
        want: Callable[[Listing], bool],
        what: str,
        timeout: float = WAIT,
        since: int = 0,
    ) -> Listing:
        """Wait until the client's latest onSync list (since ``since``) satisfies ``want``."""

        def check() -> Listing | None:
            syncs = [
                e
                for e in self.events[since:]
                if e["id"] == id and e["ev"] == "sync" and e["topic"] == topic
            ]
            if syncs and want(syncs[-1]["list"]):
                return list(syncs[-1]["list"])
            return None

        return self.wait_until(f"{id}: {what}", check, timeout)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.send("exit")
        if self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        for reader in self._readers:
            reader.join(5)


@contextlib.contextmanager
def agent_for(cluster: LocalCluster) -> Iterator[Agent]:
    agent = Agent(cluster)
    try:
        yield agent
    finally:
        agent.close()


# -- presence lists -----------------------------------------------------------------------------


def shape(listing: Listing) -> dict[str, int]:
    """key -> number of metas."""
    return {entry["key"]: len(entry["metas"]) for entry in listing}


def refs(listing: Listing) -> dict[str, list[str]]:
    return {entry["key"]: sorted(m["phx_ref"] for m in entry["metas"]) for entry in listing}


def has_shape(want: dict[str, int]) -> Callable[[Listing], bool]:
    return lambda listing: shape(listing) == want


def one_each(users: list[str]) -> dict[str, int]:
    return dict.fromkeys(users, 1)


def uid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def diff_refs(agent: Agent, id: str, topic: str, side: str, since: int = 0) -> Counter[str]:
    """phx_ref -> how many presence_diff frames the client got with it in ``side``
    (``joins`` or ``leaves``) since ``since``."""
    return Counter(
        meta["phx_ref"]
        for event in agent.of(id, "frame", since, topic=topic, event="presence_diff")
        for presence in event["data"][side].values()
        for meta in presence["metas"]
    )
