"""A short headless locust run (``loadtest/locustfile.py``) against a real node.

Locust runs as a subprocess: importing it here would monkey-patch this process with gevent
(and its imports warn, which this suite turns into errors). The run must exit 0 (locust exits
1 on any failure), record no failures, and exercise connect, join, ping and the shout
broadcast latency.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.support.processes import ROOT, VENV_BIN, running_server

USERS = 20
SPAWN_RATE = 10
RUN_TIME = "8s"


def test_headless_locust_run_has_no_failures(tmp_path: Path) -> None:
    with running_server({"SWITCHBOARD_LIMITS": "off"}) as node:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("LOCUST_", "SWITCHBOARD_"))
        }
        env["SWITCHBOARD_SECRET"] = node.secret
        command = [
            str(VENV_BIN / "locust"),
            "-f",
            str(ROOT / "loadtest" / "locustfile.py"),
            "--headless",
            "-u",
            str(USERS),
            "-r",
            str(SPAWN_RATE),
            "-t",
            RUN_TIME,
            "--host",
            f"ws://127.0.0.1:{node.port}",
            "--rooms",
            "4",
            "--pace",
            "0.5",
            "--only-summary",
            "--json-file",
            str(tmp_path / "stats"),  # locust appends .json
        ]
        run = subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
    output = f"exit code {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert run.returncode == 0, output
    assert "Traceback" not in run.stderr, output

    entries = json.loads((tmp_path / "stats.json").read_text())
    stats = {(entry["method"], entry["name"]): entry for entry in entries}
    failures = {key: entry["num_failures"] for key, entry in stats.items() if entry["num_failures"]}
    assert not failures, output
    for key in [("WS", "connect"), ("WS", "join"), ("WS", "ping"), ("broadcast", "shout latency")]:
        assert key in stats and stats[key]["num_requests"] > 0, (key, sorted(stats), output)
    # every user connected and joined exactly once, and left at the end
    assert stats[("WS", "connect")]["num_requests"] == USERS, output
    assert stats[("WS", "join")]["num_requests"] == USERS, output
    assert stats[("WS", "leave")]["num_requests"] == USERS, output
