"""Run one phoenix.js scenario (tests/client/js/scenarios.js) in Node and read its records."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ROOT, ServerProcess

SCRIPT = Path(__file__).parent / "js" / "scenarios.js"
LABELS = ("a", "b", "c")
SCENARIO_LIMIT_MS = 8000  # the script fails itself after this
PROCESS_TIMEOUT = 20.0  # and is killed after this, should it hang anyway
PARALLEL = 4


Frame = list[Any]


@dataclass
class ScenarioRun:
    """What one scenario saw: ``obs`` (its observations) and ``records`` (frames, callbacks)."""

    name: str
    returncode: int | None
    result: dict[str, Any]
    stderr: str
    users: dict[str, str]

    @property
    def obs(self) -> dict[str, Any]:
        return self.result.get("obs", {})

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.result.get("records", [])

    def check(self) -> ScenarioRun:
        """Fail unless the script finished by itself without error."""
        if self.returncode != 0 or not self.result.get("ok"):
            tail = json.dumps(self.records[-15:], indent=1)
            pytest.fail(
                f"phoenix.js scenario {self.name!r} failed (exit {self.returncode}): "
                f"{self.result.get('error')}\nstill waiting for: {self.result.get('pending')}\n"
                f"last records: {tail}\nstderr: {self.stderr[-2000:]}",
                pytrace=False,
            )
        return self

    def of(self, label: str, type_: str, **match: Any) -> list[dict[str, Any]]:
        return [
            r
            for r in self.records
            if r["label"] == label
            and r["type"] == type_
            and all(r.get(k) == v for k, v in match.items())
        ]

    def frames(self, label: str, direction: str) -> list[Frame]:
        """Decoded text frames (``[join_ref, ref, topic, event, payload]``) in one direction."""
        return [r["data"] for r in self.of(label, "frame", dir=direction, binary=False)]

    def binary_frames(self, label: str, direction: str) -> list[list[int]]:
        return [r["bytes"] for r in self.of(label, "frame", dir=direction, binary=True)]

    def sent(self, label: str, event: str, topic: str | None = None) -> list[Frame]:
        return [f for f in self.frames(label, "out") if f[3] == event and topic in (None, f[2])]

    def received(self, label: str, event: str, topic: str | None = None) -> list[Frame]:
        return [f for f in self.frames(label, "in") if f[3] == event and topic in (None, f[2])]

    def reply_to(self, label: str, ref: str) -> list[Frame]:
        return [f for f in self.received(label, "phx_reply") if f[1] == ref]


class ScenarioPool:
    def __init__(self, server: ServerProcess, node: str) -> None:
        self.server = server
        self.node = node
        self.executor = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="phoenix-js")
        self.futures: dict[str, Future[ScenarioRun]] = {}

    def start(self, name: str) -> None:
        if name not in self.futures:
            self.futures[name] = self.executor.submit(self._run, name)

    def result(self, name: str) -> ScenarioRun:
        self.start(name)
        return self.futures[name].result(timeout=PROCESS_TIMEOUT * 3)

    def _run(self, name: str) -> ScenarioRun:
        suffix = uuid.uuid4().hex[:10]
        users = {label: f"js-{name}-{label}-{suffix}" for label in LABELS}
        config = {
            "endpoint": f"ws://{self.server.host}:{self.server.port}/socket",
            "tokens": {label: self.server.token(user) for label, user in users.items()},
            "suffix": suffix,
            "limitMs": SCENARIO_LIMIT_MS,
        }
        try:
            done = subprocess.run(
                [self.node, str(SCRIPT), name],
                cwd=ROOT,
                env={**os.environ, "PHX_SCENARIO_CONFIG": json.dumps(config)},
                capture_output=True,
                text=True,
                timeout=PROCESS_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr if isinstance(exc.stderr, str) else ""
            return ScenarioRun(name, None, {"error": "node did not exit"}, stderr, users)
        lines = done.stdout.strip().splitlines()
        try:
            result = json.loads(lines[-1]) if lines else {"error": "no output"}
        except ValueError:
            result = {"error": f"unparsable output: {done.stdout[-2000:]}"}
        return ScenarioRun(name, done.returncode, result, done.stderr, users)

    def close(self) -> None:
        for future in self.futures.values():
            future.cancel()
        self.executor.shutdown(wait=True)
