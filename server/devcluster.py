"""A local cluster on loopback: redis-server, N Switchboard nodes and nginx in front.

``switchboard cluster --nodes 3`` runs it in the foreground (:func:`run`): a process that
exits is reported and the rest keep serving, so failover can be watched; SIGHUP restarts
whatever exited, SIGUSR1 switches blue-green, Ctrl-C or SIGTERM stops everything (by PID).
Its nodes run the dev profile, so the demo page gets tokens from ``/dev/token`` as on one
node: safe only because everything binds 127.0.0.1 (nothing binds outside 127.0.0.0/8).
Tests use :class:`LocalCluster` directly, in the test profile. Every process gets a free
port unless one is given.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from switchboard.server.resources import NGINX_TEMPLATE


def free_port(taken: tuple[int, ...] = ()) -> int:
    """A port free right now, other than those ``taken`` by what has not bound them yet (the
    kernel hands a port just released out again)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port


def wait_for_port(
    port: int, process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 15.0
) -> None:
    """A readiness probe: the port accepts connections (or the process died)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(
                    f"process {process.pid} exited with {process.returncode}"
                ) from None
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on 127.0.0.1:{port} after {timeout} s"
                ) from None
            time.sleep(0.05)


def find_binary(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise RuntimeError(f"{name} is not installed (scripts/test.sh installs it from Debian)")
    return found


@dataclass
class Node:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class LocalCluster:
    nodes_count: int = 2
    nginx_port: int = 0
    redis_port: int = 0
    secret: str = field(default_factory=lambda: "cluster-secret-" + os.urandom(12).hex())
    node_env: dict[str, str] = field(default_factory=dict)
    run_dir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="switchboard-cluster-"))
    )
    nodes: list[Node] = field(default_factory=list)
    redis: subprocess.Popen[bytes] | None = None
    nginx: subprocess.Popen[bytes] | None = None

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.nginx_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.nginx_port}/socket/websocket"

    def start(self) -> LocalCluster:
        try:
            self.start_redis()
            for index in range(self.nodes_count):
                self.start_node(f"node{index + 1}")
            self.start_nginx()
        except BaseException:
            self.stop()
            raise
        return self

    def start_redis(self) -> None:
        self.redis_port = self.redis_port or free_port((self.nginx_port,))
        self.redis = subprocess.Popen(
            [
                find_binary("redis-server"),
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.run_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.redis_port, self.redis)

    def restart_redis(self) -> None:
        """Start redis-server again on the same port (after it was killed)."""
        self.start_redis()

    def start_node(self, name: str, port: int = 0) -> Node:
        port = port or free_port((self.nginx_port, self.redis_port))
        env = {
            **os.environ,
            "SWITCHBOARD_PROFILE": "test",
            "SWITCHBOARD_SECRET": self.secret,
            "SWITCHBOARD_PUBSUB_URL": self.redis_url,
            "SWITCHBOARD_NODE": name,
            "SWITCHBOARD_TRUSTED_PROXIES": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
            **self.node_env,
        }
        log = open(self.run_dir / f"{name}.log", "ab")  # noqa: SIM115 - the node owns it
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "switchboard"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=log,
            cwd=self.run_dir,
            start_new_session=True,
        )
        log.close()
        wait_for_port(port, process)
        node = Node(name, port, process, env)
        self.nodes = [n for n in self.nodes if n.name != name] + [node]
        return node

    def start_nginx(self) -> None:
        self.nginx_port = self.nginx_port or free_port()
        self.write_nginx_config()
        self.nginx = subprocess.Popen(
            [find_binary("nginx"), "-c", str(self.run_dir / "nginx.conf"), "-p", str(self.run_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a terminal Ctrl-C goes to the runner alone
        )
        wait_for_port(self.nginx_port, self.nginx)

    def write_nginx_config(self, nodes: list[Node] | None = None) -> None:
        servers = "\n".join(
            f"        server 127.0.0.1:{node.port} max_fails=1 fail_timeout=2s;"
            for node in (nodes or self.nodes)
        )
        config = (
            NGINX_TEMPLATE.read_text()
            .replace("@UPSTREAM_SERVERS@", servers)
            .replace("@LISTEN@", f"127.0.0.1:{self.nginx_port}")
            .replace("@RUN_DIR@", str(self.run_dir))
        )
        (self.run_dir / "nginx.conf").write_text(config)

    def reload_nginx(self, nodes: list[Node]) -> None:
        """Point nginx at ``nodes`` (blue-green switch) without dropping its connections."""
        assert self.nginx is not None
        self.write_nginx_config(nodes)
        self.nginx.send_signal(signal.SIGHUP)

    def wait_ready(self, node: Node, timeout: float = 15.0) -> None:
        """Until ``/health/ready`` answers 200 (actors up, pub/sub connected)."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{node.url}/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{node.name} not ready after {timeout} s")
            time.sleep(0.1)

    def wait_nginx_routes_to(self, nodes: list[Node], timeout: float = 10.0) -> None:
        """nginx applies a reload asynchronously: wait until it sends requests to ``nodes``
        (three answers in a row from one of them), so nobody is drained back onto old ones."""
        import urllib.error
        import urllib.request

        names = {node.name for node in nodes}
        deadline, in_a_row = time.monotonic() + timeout, 0
        while in_a_row < 3:
            try:
                with urllib.request.urlopen(f"{self.url}/health/ready", timeout=2) as response:
                    answered = json.loads(response.read()).get("node", "")
                in_a_row = in_a_row + 1 if answered.rsplit(":", 1)[0] in names else 0
            except (urllib.error.URLError, OSError, ValueError):
                in_a_row = 0
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nginx still does not route to {sorted(names)} after {timeout} s"
                )
            time.sleep(0.02)

    def blue_green(self) -> list[Node]:
        """Replace every node: start a new set, wait until it is ready, point nginx at it,
        then drain the old set (SIGTERM: clients get 1012 and reconnect, through nginx, to
        the new set). Returns the new nodes."""
        old = list(self.nodes)
        generation = 1 + max(
            (int(n.name.rsplit("-g", 1)[1]) for n in old if "-g" in n.name), default=1
        )
        new: list[Node] = []
        try:
            for node in old:
                new.append(self.start_node(f"{node.name.rsplit('-g', 1)[0]}-g{generation}"))
            for node in new:
                self.wait_ready(node)
        except BaseException:
            for node in new:  # the old set keeps serving; nothing changed for clients
                _stop_process(node.process)
            self.nodes = old
            raise
        self.nodes = new
        self.reload_nginx(new)
        self.wait_nginx_routes_to(new)
        for node in old:
            node.process.send_signal(signal.SIGTERM)
        for node in old:
            _stop_process(node.process, already_signalled=True)
        return new

    def describe(self) -> dict[str, object]:
        return {
            "nginx": self.url,
            "redis": self.redis_url,
            "secret": self.secret,
            "nodes": {node.name: node.url for node in self.nodes},
            "pids": {
                name: process.pid
                for name, process in self.processes().items()
                if process.poll() is None
            },
            "logs": str(self.run_dir),
        }

    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """Every process of the cluster by name: redis, the nodes, nginx."""
        found = {"redis": self.redis, **{n.name: n.process for n in self.nodes}}
        found["nginx"] = self.nginx
        return {name: process for name, process in found.items() if process is not None}

    def exited(self) -> dict[str, int]:
        """Name -> exit code of every process of the cluster that is no longer running."""
        return {
            name: process.returncode
            for name, process in self.processes().items()
            if process.poll() is not None
        }

    def restart_exited(self) -> list[str]:
        """Start again, on the same ports, whatever exited; returns their names."""
        restarted = []
        if self.redis is not None and self.redis.poll() is not None:
            self.start_redis()
            restarted.append("redis")
        for node in [n for n in self.nodes if n.process.poll() is not None]:
            self.start_node(node.name, node.port)
            restarted.append(node.name)
        if self.nginx is not None and self.nginx.poll() is not None:
            self.start_nginx()
            restarted.append("nginx")
        return restarted

    def stop(self) -> None:
        """Stop nginx, then the nodes (SIGTERM, so they drain), then Redis; all by PID."""
        for process in [self.nginx, *[n.process for n in self.nodes], self.redis]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [self.nginx, *[n.process for n in self.nodes], self.redis]:
            if process is None:
                continue
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _stop_process(
    process: subprocess.Popen[bytes], already_signalled: bool = False, wait: float = 60
) -> None:
    if process.poll() is None and not already_signalled:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(wait)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def run(nodes: int, port: int, drain_period: float) -> int:
    """Foreground: start, print where everything is, report processes that exit, restart
    them on SIGHUP, switch blue-green on SIGUSR1, stop everything on Ctrl-C or SIGTERM."""
    admin_token = os.environ.get("SWITCHBOARD_ADMIN_TOKEN") or secrets.token_urlsafe(18)
    cluster = LocalCluster(
        nodes,
        nginx_port=port,
        node_env={
            # The demo page needs /dev/token; set SWITCHBOARD_PROFILE=test for /test/* hooks.
            "SWITCHBOARD_PROFILE": os.environ.get("SWITCHBOARD_PROFILE", "dev"),
            "SWITCHBOARD_DRAIN_PERIOD": str(drain_period),
            "SWITCHBOARD_ADMIN_TOKEN": admin_token,
        },
    )
    stop = threading.Event()
    switch = threading.Event()
    restart = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: switch.set())
    signal.signal(signal.SIGHUP, lambda *_: restart.set())
    pid = os.getpid()
    cluster.start()
    print(json.dumps({**cluster.describe(), "admin_token": admin_token}, indent=2), flush=True)
    print(
        f"cluster up; open {cluster.url}/ (console: {cluster.url}/dashboard); Ctrl-C stops it; "
        f"kill -HUP {pid} restarts what exited; kill -USR1 {pid} = blue-green",
        flush=True,
    )
    reported: dict[str, int] = {}
    try:
        while not stop.wait(0.5):
            if switch.is_set():
                switch.clear()
                print("blue-green: starting a new set of nodes", flush=True)
                cluster.blue_green()
                print(json.dumps(cluster.describe(), indent=2), flush=True)
                continue
            if restart.is_set():
                restart.clear()
                for name in cluster.restart_exited():
                    reported.pop(name, None)
                    print(f"restarted {name} (pid {cluster.processes()[name].pid})", flush=True)
                continue
            for name, code in cluster.exited().items():
                if reported.get(name) != code:
                    reported[name] = code
                    print(
                        f"exited: {name} with {_exit_status(code)}; the rest keep serving; "
                        f"kill -HUP {pid} restarts it",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        cluster.stop()
        print("cluster stopped", flush=True)
    return 0


def _exit_status(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"code {code}"
