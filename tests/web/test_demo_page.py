"""The demo page: cheap HTTP checks, and a real-browser run of tests/web/demo_page.mjs.

The browser test drives headless Debian Chromium with playwright-core from npm (no browser
download); scripts/test.sh installs both. It needs a node in the dev profile, because the
page gets its token from /dev/token, which exists only there.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.support.browser import browser_tools, run_browser_script
from tests.support.processes import ServerProcess, running_server

SCRIPT = Path(__file__).with_name("demo_page.mjs")
PHOENIX_MJS = "/vendor/phoenix/phoenix.mjs"
HTML_SINKS = re.compile(r"\.(?:inner|outer)HTML\b|insertAdjacentHTML|document\.write|\beval\(")


def test_index_serves_the_demo_page(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert PHOENIX_MJS in response.text
    assert '<script type="module" src="/static/app.js">' in response.text


def test_static_assets_are_served(server: ServerProcess) -> None:
    script = httpx.get(f"{server.url}/static/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert f'from "{PHOENIX_MJS}"' in script.text
    assert not HTML_SINKS.search(script.text), "user text must go through textContent"
    style = httpx.get(f"{server.url}/static/style.css")
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")


def test_phoenix_module_is_served(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}{PHOENIX_MJS}")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert "export" in response.text and "Presence" in response.text


def test_dev_token_is_absent_outside_the_dev_profile(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/dev/token", params={"user": "alice"}).status_code == 404


def test_demo_page_in_a_real_browser(tmp_path: Path) -> None:
    node, chromium = browser_tools("playwright-core")
    with running_server({"SWITCHBOARD_PROFILE": "dev"}) as dev:
        token = httpx.get(f"{dev.url}/dev/token", params={"user": "alice"})
        assert token.status_code == 200 and token.json()["user"] == "alice"

        screenshot = tmp_path / "demo.png"
        env = {"BASE_URL": dev.url, "CHROMIUM": chromium, "SCREENSHOT": str(screenshot)}
        result, output = run_browser_script(node, SCRIPT, env)
    assert result.returncode == 0, output
    assert "PASS" in result.stdout, output
    assert screenshot.stat().st_size > 0
