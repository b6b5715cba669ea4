"""``switchboard cluster`` as a developer runs it: the demo page works through its nginx as
on one node (tests/web/demo_page.mjs in headless Chromium), and a node that exits is
reported while nginx, Redis and the other node keep serving; ``kill -HUP`` brings it back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchboard.presence.tracker import node_name
from switchboard.server.devcluster import free_port
from tests.cluster.helpers import WAIT, wait_for
from tests.support.browser import browser_tools, run_browser_script
from tests.support.processes import ROOT, Output, cmdline, descendants, descriptions

DEMO_PAGE = ROOT / "tests" / "web" / "demo_page.mjs"


@pytest.fixture(scope="module")
def cluster_command() -> Iterator[tuple[subprocess.Popen[str], Output, dict[str, Any]]]:
    """The runner with two nodes, in the profile a developer gets (no SWITCHBOARD_PROFILE)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    runner = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "switchboard"),
            "cluster",
            "--nodes",
            "2",
            "--port",
            str(free_port()),
            "--drain-period",
            "0.5",
        ],
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    output = Output(runner)
    started: dict[int, str] = {}
    description: dict[str, Any] = {}
    try:
        output.wait(
            "cluster up", lambda lines: any(line.startswith("cluster up") for line in lines), 30
        )
        description = descriptions(output.lines)[0]
        started.update(descendants(runner.pid))
        yield runner, output, description
    finally:
        if runner.poll() is None:
            runner.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                runner.wait(30)
        if runner.poll() is None:
            runner.kill()
            runner.wait(5)
        started.update(descendants(runner.pid))
        for pid, command in started.items():
            if cmdline(pid) == command:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        output.join()
        if description:
            shutil.rmtree(description["logs"], ignore_errors=True)


def ready(url: str) -> httpx.Response:
    return httpx.get(f"{url}/health/ready", timeout=WAIT)


def test_the_demo_page_works_on_the_local_cluster_as_on_one_node(
    cluster_command: tuple[subprocess.Popen[str], Output, dict[str, Any]], tmp_path: Path
) -> None:
    _, _, description = cluster_command
    token = httpx.get(f"{description['nginx']}/dev/token", params={"user": "alice"}, timeout=WAIT)
    assert token.status_code == 200, token.text
    node, chromium = browser_tools("playwright-core")
    screenshot = tmp_path / "cluster-demo.png"
    env = {"BASE_URL": description["nginx"], "CHROMIUM": chromium, "SCREENSHOT": str(screenshot)}
    result, output = run_browser_script(node, DEMO_PAGE, env)
    assert result.returncode == 0, output
    assert "PASS" in result.stdout, output
    print(f"screenshot: {screenshot}")
    assert "admin_token" in description, "the console needs the admin token it printed"


def test_a_node_that_exits_is_reported_the_rest_keep_serving_and_sighup_restarts_it(
    cluster_command: tuple[subprocess.Popen[str], Output, dict[str, Any]],
) -> None:
    runner, output, description = cluster_command
    node1, node2 = description["nodes"]["node1"], description["nodes"]["node2"]
    assert f"kill -HUP {runner.pid}" in next(
        line for line in output.lines if line.startswith("cluster up")
    )

    os.kill(description["pids"]["node2"], signal.SIGKILL)
    report = output.wait(
        "the runner reports node2",
        lambda lines: next((line for line in lines if line.startswith("exited: node2")), None),
        WAIT,
        stream="stderr",
    )
    assert "signal SIGKILL" in report and f"kill -HUP {runner.pid}" in report, report
    assert runner.poll() is None, "the runner stopped with its node"
    # nginx fails over to node1; Redis and node1 carry on.
    for _ in range(5):
        through_nginx = ready(description["nginx"])
        assert through_nginx.status_code == 200, through_nginx.text
        assert node_name(through_nginx.json()["node"]) == "node1"
    assert ready(node1).status_code == 200, "node1 is ready: its pub/sub (Redis) is up"

    os.kill(runner.pid, signal.SIGHUP)
    restarted = output.wait(
        "the runner restarts node2",
        lambda lines: next((line for line in lines if line.startswith("restarted node2")), None),
        30,
    )
    assert "(pid " in restarted, restarted
    wait_for("node2 is ready again", lambda: ready(node2).status_code == 200, timeout=15)
    assert ready(node1).status_code == 200
    assert not [line for line in output.errors if line.startswith("exited: node1")], output.errors
