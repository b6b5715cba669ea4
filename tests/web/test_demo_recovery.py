"""The demo page recovers the shouts it missed while its connection was down: a real-browser
run of tests/web/demo_recovery.mjs (headless Chromium, playwright-core)."""

from __future__ import annotations

from pathlib import Path

from tests.support.browser import browser_tools, run_browser_script
from tests.support.processes import running_server

SCRIPT = Path(__file__).with_name("demo_recovery.mjs")


def test_the_demo_page_shows_the_shouts_it_missed_while_offline_once_in_order() -> None:
    node, chromium = browser_tools("playwright-core")
    with running_server({"SWITCHBOARD_PROFILE": "dev"}) as dev:
        result, output = run_browser_script(
            node, SCRIPT, {"BASE_URL": dev.url, "CHROMIUM": chromium}
        )
    assert result.returncode == 0, output
    assert "PASS" in result.stdout, output
