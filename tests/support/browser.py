"""Running the real-browser scripts of tests/web (``node script.mjs`` driving headless Debian
Chromium with playwright-core from npm; scripts/test.sh installs both)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.support.processes import ROOT


def browser_tools(*packages: str) -> tuple[str, str]:
    """The paths of node and chromium; skips the test if either, or one of the npm
    ``packages``, is missing."""
    node = shutil.which("node")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    missing = []
    if node is None:
        missing.append("node")
    if not Path(chromium).exists():
        missing.append("chromium (apt-get install chromium)")
    for package in packages:
        if not (ROOT / "node_modules" / package).is_dir():
            missing.append(f"{package} (npm ci)")
    if missing:
        pytest.skip("browser test needs " + ", ".join(missing) + "; scripts/test.sh installs them")
    assert node is not None
    return node, chromium


def run_browser_script(
    node: str, script: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run ``script`` with ``env`` on top of this process's environment; returns the result
    and its stdout and stderr as one text to show when a check fails."""
    result = subprocess.run(
        [node, str(script)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def run_browser_steps(
    node: str,
    script: Path,
    env: dict[str, str],
    actions: Mapping[str, Callable[[], object]],
    timeout: float = 90.0,
) -> tuple[int, str]:
    """Run ``script`` and do what it asks on the way: a line ``ASK <name>`` on its stdout runs
    ``actions[name]()`` here (stopping a node, killing Redis...), then ``DONE <name>`` (or
    ``FAILED <name> <error>``) goes to its stdin. Returns its exit code and everything it
    printed, to show when a check fails."""
    process = subprocess.Popen(
        [node, str(script)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    printed: list[str] = []
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(process.stderr or ()), daemon=True)
    reader.start()
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        for line in process.stdout:
            printed.append(line)
            if not line.startswith("ASK "):
                continue
            name = line.split()[1]
            try:
                actions[name]()
                answer = f"DONE {name}\n"
            except Exception as exc:  # the script fails with this message
                answer = f"FAILED {name} {type(exc).__name__}: {exc}\n"
            process.stdin.write(answer)
            process.stdin.flush()
        code = process.wait(10)
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait(5)
        process.stdin.close()
        process.stdout.close()
        reader.join(5)
        if process.stderr is not None:
            process.stderr.close()
    return code, f"--- stdout\n{''.join(printed)}\n--- stderr\n{''.join(errors)}"
