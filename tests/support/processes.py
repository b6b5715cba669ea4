"""Start real processes for tests (Switchboard nodes, redis-server, nginx) and stop them by PID.

Every process gets a free loopback port (the node binds port 0 and reports the port it
got in its "listening" log line), so tests never collide with services already running on
this machine and are free to kill their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (for programs that cannot bind port 0 and report it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A running ``switchboard serve``; ``logs`` collects its JSON log lines as they come."""

    process: subprocess.Popen[str]
    port: int
    node: str
    secret: str
    logs: list[dict[str, object]] = field(default_factory=list)
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/socket/websocket"

    def token(self, user_id: str, ttl: int = 3600) -> str:
        from switchboard.server.auth import issue_token

        return issue_token(self.secret, user_id, ttl=ttl)

    def socket_url(self, user_id: str, **params: str) -> str:
        query = "&".join(
            f"{k}={v}" for k, v in {"token": self.token(user_id), "vsn": "2.0.0", **params}.items()
        )
        return f"{self.ws_url}?{query}"

    def wait_for_log(self, predicate, timeout: float = 10.0) -> dict[str, object]:  # type: ignore[no-untyped-def]
        """Block until a log line matching ``predicate`` arrives (an event, not a sleep)."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for entry in self.logs[seen:]:
                    if predicate(entry):
                        return entry
                seen = len(self.logs)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    raise TimeoutError(
                        f"no matching log line from node {self.node}; last: {self.logs[-5:]}"
                    )
                self._cond.wait(remaining)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def __post_init__(self) -> None:
        self._cond = threading.Condition()


def start_server(
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    timeout: float = 20.0,
    *,
    args: tuple[str, ...] = (),
    cwd: Path | None = None,
    command: Path | None = None,
) -> ServerProcess:
    """Start ``switchboard serve [args]`` on a free port and return once it is listening.

    ``command`` is the ``switchboard`` to run (default: this venv's), ``cwd`` where it runs.
    """
    secret = "test-secret-" + os.urandom(8).hex()
    full_env = {
        **os.environ,
        "SWITCHBOARD_PROFILE": "test",
        "SWITCHBOARD_SECRET": secret,
        "SWITCHBOARD_LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    secret = full_env["SWITCHBOARD_SECRET"]
    process = subprocess.Popen(
        [
            str(command or VENV_BIN / "switchboard"),
            "serve",
            *args,
            "--host",
            host,
            "--port",
            full_env.get("SWITCHBOARD_PORT", "0"),
        ],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd or ROOT,
    )
    server = ServerProcess(process, port=0, node="", secret=secret, host=host)
    ready = threading.Event()

    def read_logs() -> None:
        assert process.stderr is not None
        with process.stderr:  # the reader closes the pipe when the node's output ends
            for line in process.stderr:
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry = {"msg": line.rstrip(), "level": "raw"}
                with server._cond:
                    server.logs.append(entry)
                    server._cond.notify_all()
                if entry.get("event") == "listening":
                    server.port = int(entry["port"])  # type: ignore[call-overload]
                    server.node = str(entry.get("node", ""))
                    ready.set()
        with server._cond:
            server._cond.notify_all()
        ready.set()

    threading.Thread(target=read_logs, daemon=True).start()
    if not ready.wait(timeout) or server.port == 0:
        server.stop(signal.SIGKILL)
        raise RuntimeError(f"switchboard did not start: {server.logs[-10:]}")
    return server


@contextlib.contextmanager
def running_server(
    env: dict[str, str] | None = None, host: str = "127.0.0.1", **options: Any
) -> Iterator[ServerProcess]:
    """:func:`start_server` (same arguments), stopped with SIGTERM on exit."""
    server = start_server(env, host, **options)
    try:
        yield server
    finally:
        server.stop(signal.SIGTERM, timeout=5.0)
