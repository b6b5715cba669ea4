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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

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
    preexec_fn: Callable[[], object] | None = None,
) -> ServerProcess:
    """Start ``switchboard serve [args]`` on a free port and return once it is listening.

    ``command`` is the ``switchboard`` to run (default: this venv's), ``cwd`` where it runs,
    ``preexec_fn`` what runs in the child before it starts (to lower its limits, say).
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
        preexec_fn=preexec_fn,
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


# -- runners that print: the lines they print, and the processes they start


class Output:
    """Lines a subprocess prints, collected by a thread; bounded waits on them."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._changed = threading.Condition()
        assert process.stdout is not None and process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(process.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(process.stderr, self.errors), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, into: list[str]) -> None:
        with stream:
            for line in stream:
                with self._changed:
                    into.append(line.rstrip("\n"))
                    self._changed.notify_all()

    def wait(
        self,
        what: str,
        check: Callable[[list[str]], Any],
        timeout: float,
        stream: str = "stdout",
    ) -> Any:
        """Until ``check`` finds something in the lines printed on ``stream`` so far."""
        lines = self.errors if stream == "stderr" else self.lines
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = check(lines)
                if found:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(
                        f"timed out after {timeout}s waiting for {what}\n"
                        f"stdout: {self.lines[-30:]}\nstderr: {self.errors[-30:]}"
                    )
                self._changed.wait(remaining)

    def join(self) -> None:
        for reader in self._readers:
            reader.join(5)


def descriptions(lines: list[str]) -> list[dict[str, Any]]:
    """Every ``describe()`` JSON the runner printed (indented, so over several lines)."""
    found, block = [], None
    for line in lines:
        if line == "{":
            block = [line]
        elif block is not None:
            block.append(line)
            if line == "}":
                found.append(json.loads("\n".join(block)))
                block = None
    return found


def descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every live process below ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found[child] = cmdline(child) or ""
                frontier.append(child)
    return found


def cmdline(pid: int) -> str | None:
    """The command line of a live (not zombie) process, None if it is gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
