"""``--profile DIR``: a py-spy record of each Python server, and what it spent its time on.

py-spy (the ``bench`` extra) attaches to the server's PID once it listens and samples it
until the server is stopped, so a profile covers the whole run of one scenario on one server:
connecting and joining as well as the measured phase (in every scenario but connrate the
measured phase dominates). It samples 100 times a second without pausing the server
(``--nonblocking``) and runs pinned to the generator's core, so the server's core is not
shared with it; the generator loses a little. py-spy leaves out threads it sees idle, but
counts some waits as active (the event loop in epoll, actor threads on their inbox): the
summary counts those apart, as waiting.

Output: ``DIR/<scenario>-<server>-<port>.speedscope.json`` (open it at speedscope.app) or a
flamegraph SVG with ``--profile-format flamegraph``. For speedscope files the report lists the
top functions, and the top packages (modules of ours), by self time.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY_SPY = shutil.which("py-spy", path=str(ROOT / ".venv" / "bin")) or shutil.which("py-spy")


class Profiler:
    """One ``py-spy record`` attached to a PID, stopped with SIGINT (it then writes)."""

    def __init__(self, pid: int, path: Path, fmt: str, core: int) -> None:
        if PY_SPY is None:
            raise RuntimeError("--profile needs py-spy: pip install -e '.[bench]'")
        self.path = path
        self.log = path.with_suffix(".log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["taskset", "-c", str(core), PY_SPY, "record", "--pid", str(pid)]
                + ["--format", fmt, "--output", str(path), "--rate", "100", "--nonblocking"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _name(frame: dict[str, object]) -> str:
    file = str(frame.get("file", ""))
    for marker in ("site-packages/", "/work/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{frame.get('name')} ({file})"


def _module(frame: dict[str, object]) -> str:
    """Where a function lives: the package for libraries, the module for our own code."""
    file = str(frame.get("file", ""))
    if "/switchboard/" in file:
        module = file.split("/switchboard/", 1)[1].removesuffix(".py")
        return "switchboard." + module.replace("/", ".")
    for marker in ("site-packages/", "/lib/python3"):
        if marker in file:
            rest = file.split(marker, 1)[1]
            parts = rest.split("/")
            return parts[1] if marker == "/lib/python3" and len(parts) > 1 else parts[0]
    return file.rsplit("/", 1)[-1]


def _idle(frame: dict[str, object]) -> bool:
    """A thread waiting, which py-spy may still count as active: the event loop in epoll,
    an actor thread on its inbox's condition."""
    name, file = str(frame.get("name", "")), str(frame.get("file", ""))
    return (name.endswith("select") and file.endswith("selectors.py")) or (
        name.endswith(".wait") and file.endswith("threading.py")
    )


def top_costs(path: Path, n: int = 8) -> dict[str, list[str]]:
    """The ``n`` functions, and the ``n`` packages or modules of ours, with the most self time,
    in % of the busy samples of a speedscope file (waits are counted apart, as idle)."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    own: Counter[str] = Counter()  # by function: the lines of one function add up
    modules: Counter[str] = Counter()
    busy = idle = 0.0
    for profile in data["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            if not stack:
                continue
            if _idle(frames[stack[-1]]):
                idle += weight
                continue
            busy += weight
            own[_name(frames[stack[-1]])] += weight
            modules[_module(frames[stack[-1]])] += weight

    def listed(counts: Counter[str]) -> list[str]:
        return [f"{100 * w / busy:5.1f}%  {name}" for name, w in counts.most_common(n)]

    if not busy:
        return {"self": [], "modules": [], "busy": ["0"]}
    share = f"{busy:.1f}s busy, {100 * idle / (busy + idle):.0f}% of samples waiting"
    return {"self": listed(own), "modules": listed(modules), "busy": [share]}
