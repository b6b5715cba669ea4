"""The servers under test: what to start, pinned to which core, and how to stop them by PID."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .flavors import Flavor, PhoenixFlavor, SocketIOFlavor, WebsocketsFlavor
from .profiling import Profiler

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
HOST = "127.0.0.1"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
SWITCHBOARD_BIN = ROOT / ".venv" / "bin" / "switchboard"
#: A variant's env may name another ``switchboard`` executable (an older commit's venv).
OTHER_BIN = "BENCH_SWITCHBOARD_BIN"
CLUSTER = "switchboard-2node"  # two switchboard nodes and redis-server, fan-out only
NODE = shutil.which("node") or "node"
#: socketio-node-presence: Node's socket.io doing the presence work of a join too (its script's
#: ``--presence``), to tell presence's cost apart from the server's.
ALL_SERVERS = (
    "switchboard",
    CLUSTER,
    "socketio",
    "socketio-node",
    "socketio-node-presence",
    "websockets",
)


@dataclass
class ServerSpec:
    label: str
    kind: str  # one of ALL_SERVERS (| redis: a part of switchboard-2node)
    env: dict[str, str] = field(default_factory=dict)
    only: tuple[str, ...] = ()  # a variant run only in these scenarios (empty: all)

    def argv(self, port: int) -> list[str]:
        if self.kind == "switchboard":
            # A variant may run another checkout's build, for a before/after in one run.
            binary = self.env.get(OTHER_BIN, str(SWITCHBOARD_BIN))
            return [binary, "serve", "--host", HOST, "--port", str(port)]
        if self.kind == "redis":
            return [
                redis_server_bin() or "redis-server",
                "--port",
                str(port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tempfile.gettempdir(),  # nothing is written there: no RDB, no AOF
            ]
        if self.kind.startswith("socketio-node"):
            script = HERE / "servers" / "socketio_node_server.js"
            presence = ["--presence"] if self.kind == "socketio-node-presence" else []
            return [NODE, str(script), "--host", HOST, "--port", str(port), *presence]
        script = HERE / "servers" / f"{self.kind}_server.py"
        return [PYTHON, str(script), "--host", HOST, "--port", str(port)]

    @property
    def protocol(self) -> str:
        """What the Node generator speaks to it: phoenix, socketio or echo."""
        if self.kind in ("switchboard", CLUSTER):
            return "phoenix"
        return "socketio" if self.kind.startswith("socketio") else "echo"

    def flavor(self) -> Flavor:
        if self.kind in ("switchboard", CLUSTER):
            return PhoenixFlavor(history=self.env.get("SWITCHBOARD_HISTORY_SIZE") != "0")
        if self.kind.startswith("socketio"):
            return SocketIOFlavor()
        return WebsocketsFlavor()


def switchboard_available() -> bool:
    return (ROOT / "server" / "cli.py").exists() and SWITCHBOARD_BIN.exists()


def redis_server_bin() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    return next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.access(p, os.X_OK)),
        None,
    )


def raise_nofile() -> None:
    """Lift the soft open-file limit as far as the hard limit allows (at most 65536)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """One server subprocess; tracked globally so it is killed on any exit path."""

    running: dict[int, ServerProcess] = {}

    nice = 0  # set from --nice
    profile_dir: Path | None = None  # --profile: record each Python server with py-spy
    profile_format = "speedscope"
    profile_core = 1  # py-spy runs on the generator's core
    scenario = ""  # the scenario running now (names the profile)
    profiles: list[Path] = []  # profiles written so far

    def __init__(self, spec: ServerSpec, core: int, logdir: Path) -> None:
        self.spec = spec
        self.core = core
        self.port = free_port()
        env = os.environ.copy()
        if spec.kind == "switchboard":
            env["SWITCHBOARD_LIMITS"] = "off"
        env.update(spec.env)
        env["PYTHONUNBUFFERED"] = "1"
        self.logpath = logdir / f"{spec.label}-{self.port}.log"
        self.log = open(self.logpath, "wb")  # noqa: SIM115
        cmd = ["taskset", "-c", str(core), *spec.argv(self.port)]
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=str(ROOT),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=self._prepare_child,
            start_new_session=True,  # Ctrl-C goes to us; we stop it ourselves
        )
        self.pid = self.proc.pid
        ServerProcess.running[self.pid] = self
        self.ps = psutil.Process(self.pid)
        self.health: str = "n/a"
        self.profiler: Profiler | None = None

    @classmethod
    def _prepare_child(cls) -> None:
        raise_nofile()  # what `prlimit --nofile` would do
        if cls.nice:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, cls.nice)
            except OSError:
                pass

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.logpath.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.label} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                _, w = await asyncio.open_connection(HOST, self.port)
                w.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    msg = f"{self.spec.label} not listening after {timeout}s"
                    raise RuntimeError(msg) from None
                await asyncio.sleep(0.05)
        self._start_profiler()
        if self.spec.kind == "switchboard":
            self.health = await self._get_status("/health/live")
        elif self.spec.kind == "redis":
            self.health = await self._redis_ping()
            if self.health != "+PONG":
                raise RuntimeError(f"{self.spec.label}: PING answered {self.health!r}")

    def _start_profiler(self) -> None:
        if (
            self.profile_dir is None
            or self.spec.kind == "redis"
            or self.spec.kind.startswith("socketio-node")
        ):
            return
        ext = "speedscope.json" if self.profile_format == "speedscope" else "svg"
        if self.profile_format == "raw":
            ext = "txt"
        name = f"{self.scenario or 'run'}-{self.spec.label.replace(':', '_')}-{self.port}.{ext}"
        path = self.profile_dir / name
        self.profiler = Profiler(self.pid, path, self.profile_format, self.profile_core)

    async def wait_status(self, path: str, want: str = "200", timeout: float = 15.0) -> None:
        """Until GET ``path`` answers ``want`` (``/health/ready``: pub/sub connected)."""
        deadline = time.monotonic() + timeout
        while (status := await self._get_status(path)) != want:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.spec.label}: {path} answered {status}, not {want}:\n{self.tail()}"
                )
            await asyncio.sleep(0.1)

    async def _redis_ping(self) -> str:
        try:
            r, w = await asyncio.open_connection(HOST, self.port)
            w.write(b"PING\r\n")
            line = await asyncio.wait_for(r.readline(), 5)
            w.close()
            return line.decode(errors="replace").strip()
        except (TimeoutError, OSError):
            return "?"

    async def _get_status(self, path: str) -> str:
        try:
            r, w = await asyncio.open_connection(HOST, self.port)
            w.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            line = await asyncio.wait_for(r.readline(), 5)
            w.close()
            return line.decode(errors="replace").split(" ", 2)[1]
        except (TimeoutError, OSError, IndexError):
            return "?"

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def cpu_parts(self) -> dict[str, tuple[int, float]]:
        """Process name -> (core it is pinned to, CPU seconds so far)."""
        return {self.spec.label: (self.core, self.cpu_seconds())}

    def rss(self) -> int:
        total = 0
        for p in self.tree():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        if self.profiler is not None:
            self.profiler.stop()
            if self.profiler.path.exists():
                ServerProcess.profiles.append(self.profiler.path)
            self.profiler = None
        children = []
        try:
            children = self.ps.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for c in children:  # by pid, only the ones this server spawned
            try:
                c.kill()
            except psutil.NoSuchProcess:
                pass
        self.log.close()
        ServerProcess.running.pop(self.pid, None)

    @classmethod
    def stop_all(cls) -> None:
        for sp in list(cls.running.values()):
            try:
                sp.stop()
            except Exception as exc:  # noqa: BLE001 - keep killing the rest
                print(f"warning: could not stop pid {sp.pid}: {exc}", file=sys.stderr)
