"""Running the real-browser scripts of tests/web (``node script.mjs`` driving headless Debian
Chromium with playwright-core from npm; scripts/test.sh installs both)."""

from __future__ import annotations

import os
import shutil
import subprocess
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
