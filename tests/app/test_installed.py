"""Installed, not only editable: the wheel holds one import package, and a fresh venv that
``pip install``s it (no checkout on sys.path) serves the demo page, the dashboard and a
local cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from switchboard.client import Client
from switchboard.server.auth import issue_token
from tests.support.browser import browser_tools, run_browser_script
from tests.support.processes import ROOT, free_port, running_server

DEMO_PAGE_SCRIPT = ROOT / "tests" / "web" / "demo_page.mjs"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob("*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; returns its bin folder."""
    home = tmp_path_factory.mktemp("fresh-venv")
    venv.create(home, with_pip=True)
    result = subprocess.run(
        [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return home / "bin"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory with no checkout in it or above it."""
    assert not (tmp_path / "server").exists() and ROOT not in tmp_path.parents
    return tmp_path


def test_the_wheel_has_one_top_level_import_name_switchboard(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    packages = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert packages == {"switchboard"}
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["switchboard"]
    assert wheel.name.startswith("switchboard_channels-")
    for shipped in (
        "static/index.html",
        "static/vendor/phoenix.mjs",
        "nginx/switchboard.conf.template",
    ):
        assert f"switchboard/{shipped}" in names


def test_after_install_only_switchboard_imports_not_the_folder_names(
    installed: Path, elsewhere: Path
) -> None:
    code = (
        "import importlib, json\n"
        "found = {}\n"
        "for name in ('switchboard', 'channels', 'server', 'actors', 'presence'):\n"
        "    try:\n"
        "        importlib.import_module(name); found[name] = True\n"
        "    except ImportError:\n"
        "        found[name] = False\n"
        "from switchboard import Channel, Socket, Emitter, Endpoint, ok, error, reply, Stop\n"
        "print(json.dumps(found))\n"
    )
    result = subprocess.run(
        [str(installed / "python"), "-c", code], cwd=elsewhere, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "switchboard": True,
        "channels": False,
        "server": False,
        "actors": False,
        "presence": False,
    }


def test_an_installed_node_serves_the_demo_page_in_a_real_browser_and_the_dashboard(
    installed: Path, elsewhere: Path
) -> None:
    node_binary, chromium = browser_tools("playwright-core")
    env = {"SWITCHBOARD_PROFILE": "dev"}
    with running_server(env, command=installed / "switchboard", cwd=elsewhere) as node:
        for path in ("/", "/dashboard", "/static/app.js", "/vendor/phoenix/phoenix.mjs"):
            assert httpx.get(f"{node.url}{path}").status_code == 200, path
        screenshot = elsewhere / "demo.png"
        browser_env = {"BASE_URL": node.url, "CHROMIUM": chromium, "SCREENSHOT": str(screenshot)}
        result, output = run_browser_script(node_binary, DEMO_PAGE_SCRIPT, browser_env)
    assert result.returncode == 0, output
    assert "PASS" in result.stdout, output


@pytest.fixture
def cluster_command(installed: Path, elsewhere: Path) -> Iterator[tuple[dict[str, object], str]]:
    """``switchboard cluster`` of the installed package; yields what it printed."""
    port = free_port()
    process = subprocess.Popen(
        [str(installed / "switchboard"), "cluster", "--nodes", "2", "--port", str(port)],
        cwd=elsewhere,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "SWITCHBOARD_DRAIN_PERIOD": "0"},
        start_new_session=True,
    )
    assert process.stdout is not None
    printed: list[str] = []
    try:
        for line in process.stdout:
            printed.append(line)
            if line.startswith("cluster up"):
                break
        text = "".join(printed)
        assert "cluster up" in text, text
        description = json.loads(text[text.index("{") : text.rindex("}") + 1])
        yield description, text
    finally:
        process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: the cluster's processes
            rest, _ = process.communicate(timeout=10)
        assert "cluster stopped" in rest, rest


def test_an_installed_switchboard_cluster_serves_the_page_and_sockets_through_nginx(
    cluster_command: tuple[dict[str, object], str],
) -> None:
    description, _ = cluster_command
    base = str(description["nginx"])
    assert httpx.get(f"{base}/").status_code == 200
    assert httpx.get(f"{base}/vendor/phoenix/phoenix.mjs").status_code == 200
    token = issue_token(str(description["secret"]), "installed-user")
    url = base.replace("http://", "ws://") + f"/socket/websocket?vsn=2.0.0&token={token}"
    with Client.connect(url) as wire:
        wire.joined("room:installed")
        assert wire.reply(wire.push("room:installed", "ping", {"n": 1}))[4] == {
            "status": "ok",
            "response": {"n": 1},
        }
