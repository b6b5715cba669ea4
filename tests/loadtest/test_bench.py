"""A tiny run of the benchmark (``python -m loadtest.bench``) against a real node, so that
the harness everyone measures with keeps working: every scenario answers with numbers and
no error. It asserts nothing about speed; the benchmark prints numbers, tests do not judge
them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.processes import ROOT

TINY = [
    "--servers",
    "switchboard,switchboard-2node,socketio-node",
    "--scenarios",
    "ping,joinstorm,reqreply,connrate,idle50k",
    "--ping-seconds",
    "0.5",
    "--storm-clients",
    "40",
    "--storm-sample",
    "2",
    "--rr-clients",
    "4",
    "--rr-seconds",
    "1",
    "--rr-warmup",
    "0.2",
    "--conn-sockets",
    "60",
    "--idle-sockets",
    "60",
    "--idle-seconds",
    "0.5",
    "--settle",
    "0.2",
    "--quiet-wait",
    "0",
]


def test_a_tiny_run_of_every_node_scenario_reports_numbers_and_no_error(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", *TINY, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = f"exit code {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert run.returncode == 0, output
    results = json.loads(out.read_text())["results"]["switchboard"]
    errors = {scenario: r["error"] for scenario, r in results.items() if "error" in r}
    assert not errors, output
    storm = results["joinstorm"]
    assert storm["clients_exact"] == 40 and storm["samples_exact"] == "2/2", storm
    assert storm["presence_frames"] >= 40, "every client got at least its presence_state"
    assert results["reqreply"]["requests_per_s"] > 0
    assert results["connrate"]["sizes"]["60"]["opened"] == 60
    assert results["idle50k"]["alive_after_idle"] == 60
    assert results["ping"]["pings"] > 0
    # the storm split over two nodes: every list holds the users of both
    split = json.loads(out.read_text())["results"]["switchboard-2node"]["joinstorm"]
    assert "error" not in split, output
    assert split["clients_exact"] == 40 and split["samples_exact"] == "2/2", split
    # the peer, driven by the generator's own socket.io client: connects, joins, acks
    peer = json.loads(out.read_text())["results"]["socketio-node"]
    assert not {scenario: r["error"] for scenario, r in peer.items() if "error" in r}, output
    assert peer["connrate"]["sizes"]["60"]["opened"] == 60, peer["connrate"]
    assert peer["reqreply"]["requests_per_s"] > 0, peer["reqreply"]
    assert peer["idle50k"]["alive_after_idle"] == 60, peer["idle50k"]
