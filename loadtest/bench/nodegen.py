"""The Node load generator (``node/generator.js``): started, driven and stopped from here.

The scenarios that need many connections or many requests per second use it, since one
Python process on one core would be the bottleneck (the issue's own numbers used one). It
runs pinned to the generator core with the open-file limit raised; when one process cannot
hold all the connections (the hard limit), the users are split over several processes, all
on that core. Connections cycle through loopback source addresses (127.0.0.1, .2, ...) so
that no (source, server) pair runs out of ephemeral ports.

Each process answers each command with one JSON line; :meth:`NodeGenerator.command` sends a
command to all of them and returns their answers.
"""

from __future__ import annotations

import asyncio
import json
import math
import resource
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil

from .processes import HERE, HOST, NODE, ServerProcess, ServerSpec, raise_nofile

SCRIPT = HERE / "node" / "generator.js"
PORTS_PER_ADDRESS = 15_000  # well under the ~28k ephemeral ports of one (source, server) pair
FDS_SPARE = 500  # what a Node process uses besides its sockets


def fd_limit() -> int:
    """The open-file limit a process we start can raise itself to."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)


def phoenix_tokens(count: int, secret: str | None = None) -> list[str]:
    """Tokens for users bench-0 .. bench-(count - 1), signed for the dev profile's secret."""
    from switchboard.server.auth import issue_token
    from switchboard.server.config import DEV_SECRET

    return [issue_token(secret or DEV_SECRET, f"bench-{n}", ttl=86400) for n in range(count)]


class GeneratorError(RuntimeError):
    pass


class NodeGenerator:
    """``users`` connections to ``spec``'s server on ``port``, over as many processes as the
    fd limit needs. ``presence_users``: the size of each client's presence view (0: none);
    ``sample``: phoenix.js clients (users after the raw ones) that check presence too."""

    def __init__(
        self,
        spec: ServerSpec,
        port: int,
        users: int,
        core: int,
        workdir: Path,
        *,
        concurrency: int = 200,
        presence_users: int = 0,
        sample: int = 0,
        heartbeat_s: float = 30.0,
        ports: list[int] | None = None,
        secret: str | None = None,
    ) -> None:
        self.spec = spec
        self.port = port
        self.users = users
        self.core = core
        self.workdir = workdir
        self.concurrency = concurrency
        self.presence_users = presence_users
        self.sample = sample
        self.heartbeat_s = heartbeat_s
        # Several servers (a cluster's nodes): process i connects its share to ports[i % n],
        # with tokens signed by the cluster's secret.
        self.ports = ports or [port]
        self.secret = secret
        self.procs: list[asyncio.subprocess.Process] = []
        per_process = max(1000, fd_limit() - FDS_SPARE)
        needed = math.ceil((users + sample) / per_process)
        self.processes = len(self.ports) * max(1, math.ceil(needed / len(self.ports)))
        self.addresses = [f"127.0.0.{i + 1}" for i in range(math.ceil(users / PORTS_PER_ADDRESS))]

    async def start(self) -> None:
        tokens = self.workdir / f"tokens-{self.port}.json"
        if self.spec.protocol == "phoenix":
            tokens.write_text(json.dumps(phoenix_tokens(self.users + self.sample, self.secret)))
        share = math.ceil(self.users / self.processes)
        for i in range(self.processes):
            first = i * share
            config = {
                "protocol": self.spec.protocol,
                "base": f"ws://{HOST}:{self.ports[i % len(self.ports)]}",
                "tokens": str(tokens),
                "first": first,
                "count": max(0, min(share, self.users - first)),
                "users": self.presence_users,
                "sample": self.sample if i == 0 else 0,
                "sample_first": self.users,
                "addrs": self.addresses,
                "concurrency": max(1, self.concurrency // self.processes),
                "heartbeat_ms": int(self.heartbeat_s * 1000),
            }
            path = self.workdir / f"generator-{self.port}-{i}.json"
            path.write_text(json.dumps(config))
            proc = await asyncio.create_subprocess_exec(
                "taskset",
                "-c",
                str(self.core),
                NODE,
                str(SCRIPT),
                str(path),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=self._log(i),
                cwd=str(HERE),
                preexec_fn=raise_nofile,
                limit=2**24,
            )
            self.procs.append(proc)
        for proc in self.procs:
            await self._line(proc, 30.0)

    async def command(self, op: str, timeout: float = 600.0, **fields: Any) -> list[dict[str, Any]]:
        """Send ``{op, **fields}`` to every process; their answers, in process order."""
        line = (json.dumps({"op": op, **fields}) + "\n").encode()
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(line)
            await proc.stdin.drain()
        answers = await asyncio.gather(*(self._line(proc, timeout) for proc in self.procs))
        for answer in answers:
            if "error" in answer:
                raise GeneratorError(f"generator failed in {op}: {answer['error']}")
        return list(answers)

    async def _line(self, proc: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
        assert proc.stdout is not None
        try:
            raw = await asyncio.wait_for(proc.stdout.readline(), timeout)
        except TimeoutError:
            raise GeneratorError(f"no answer from the generator within {timeout:.0f}s") from None
        if not raw:
            await proc.wait()
            index = self.procs.index(proc)
            err = self._log_path(index).read_text(errors="replace")[-2000:]
            raise GeneratorError(f"the generator exited ({proc.returncode}): {err}")
        return dict(json.loads(raw))

    def _log_path(self, index: int) -> Path:
        return self.workdir / f"generator-{self.port}-{index}.log"

    def _log(self, index: int) -> Any:
        return open(self._log_path(index), "wb")  # noqa: SIM115 - the child keeps it

    def cpu(self) -> tuple[float, float]:
        """(CPU seconds, of which kernel) of all generator processes (for ``Meter``)."""
        total = kernel = 0.0
        for proc in self.procs:
            try:
                times = psutil.Process(proc.pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
            kernel += times.system
        return total, kernel

    async def stop(self) -> None:
        """Ask each process to exit; kill (by PID) the ones that do not within 5 s."""
        for proc in self.procs:
            if proc.returncode is None and proc.stdin is not None:
                try:
                    proc.stdin.write(b'{"op": "exit"}\n')
                    await proc.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self.procs = []


def max_sockets() -> int:
    """How many sockets one server process can hold here (its fd limit, less some spare)."""
    return fd_limit() - 200


@asynccontextmanager
async def generating(
    spec: ServerSpec, core: int, gen_core: int, logdir: Path, users: int, **options: Any
) -> AsyncIterator[tuple[ServerProcess, NodeGenerator]]:
    """A fresh server and a Node generator for ``users`` connections to it; both stopped
    (by PID) on the way out."""
    sp = ServerProcess(spec, core, logdir)
    gen: NodeGenerator | None = None
    try:
        await sp.wait_ready()
        gen = NodeGenerator(spec, sp.port, users, gen_core, logdir, **options)
        await gen.start()
        yield sp, gen
    finally:
        if gen is not None:
            await gen.stop()
        sp.stop()
