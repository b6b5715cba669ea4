"""A private ``redis-server`` for tests: a free loopback port, a temp dir, stopped by PID.

It never touches the machine's own Redis (6379) and never signals a process by name, so a
test may kill and restart its server freely::

    with running_redis() as redis:
        backend = RedisBackend(redis.url)
        redis.kill()      # SIGKILL, like a crash
        redis.restart()   # a new process on the same port
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.processes import free_port

HOST = "127.0.0.1"
SYSTEM_PORT = 6379


def redis_server_path() -> str:
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if path is None:
        raise RuntimeError(
            "redis-server is not installed (not on PATH, not in /usr/bin); "
            "scripts/test.sh installs it, or run: apt-get install redis-server"
        )
    return path


class RedisProcess:
    """One private redis-server; ``restart`` keeps the port so clients can reconnect."""

    def __init__(
        self,
        port: int,
        directory: Path,
        startup_timeout: float = 10.0,
        persistent: bool = False,
    ) -> None:
        if port == SYSTEM_PORT:
            raise RuntimeError("refusing to run a test redis-server on 6379 (the machine's own)")
        self.port = port
        self.directory = directory
        self.startup_timeout = startup_timeout
        #: Keep the data across restarts (an append-only file, synced on every write).
        self.persistent = persistent
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("redis-server was never started")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"redis-server is already running on port {self.port}")
        log = self.directory / "redis.log"
        self._process = subprocess.Popen(
            [
                redis_server_path(),
                "--port",
                str(self.port),
                "--bind",
                HOST,
                "--save",
                "",
                *(
                    ("--appendonly", "yes", "--appendfsync", "always")
                    if self.persistent
                    else ("--appendonly", "no")
                ),
                "--daemonize",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_until_ready(log)

    def _wait_until_ready(self, log: Path) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while not self._answers_ping():
            if not self.running:
                raise RuntimeError(f"redis-server exited on port {self.port}: {_tail(log)}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer PING within "
                    f"{self.startup_timeout}s: {_tail(log)}"
                )
            time.sleep(0.02)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL by PID, as a crash would."""
        self._signal(signal.SIGKILL, timeout=5.0)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM by PID; SIGKILL if it has not exited within ``timeout``."""
        try:
            self._signal(signal.SIGTERM, timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        """Start a new process on the same port (stopping the current one if it runs)."""
        if self.running:
            self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its temp dir."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _signal(self, sig: int, timeout: float) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, sig)
        process.wait(timeout)


def start_redis(attempts: int = 3, persistent: bool = False) -> RedisProcess:
    """Start a private redis-server on a free loopback port; returns once it answers PING.

    ``persistent`` keeps its data across :meth:`RedisProcess.restart` (else a restart
    starts it empty, as a crash of an unpersisted Redis would)."""
    redis_server_path()  # fail early, with the message saying how to install it
    directory = Path(tempfile.mkdtemp(prefix="switchboard-redis-"))
    last_error: Exception | None = None
    for _ in range(attempts):  # another program may take the free port before redis binds it
        redis = RedisProcess(free_port(HOST), directory, persistent=persistent)
        try:
            redis.start()
            return redis
        except RuntimeError as exc:
            last_error = exc
    shutil.rmtree(directory, ignore_errors=True)
    raise RuntimeError(f"could not start redis-server: {last_error}")


@contextlib.contextmanager
def running_redis(persistent: bool = False) -> Iterator[RedisProcess]:
    redis = start_redis(persistent=persistent)
    try:
        yield redis
    finally:
        redis.close()


def _tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:]) or "(empty log)"
    except OSError:
        return "(no log)"
