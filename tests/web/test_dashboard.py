"""The live dashboard: cheap HTTP checks, and a real-browser run of tests/web/dashboard.mjs.

The browser test drives headless Debian Chromium with playwright-core from npm (no browser
download); scripts/test.sh installs both. It starts its own node in the test profile with an
admin token, and hands the script socket tokens for a few users, who connect as raw `ws`
clients, join ``room:busy`` and shout while the page is watched.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx

from tests.support.browser import browser_tools, run_browser_script
from tests.support.processes import ServerProcess, running_server

SCRIPT = Path(__file__).with_name("dashboard.mjs")
PHOENIX_MJS = "/vendor/phoenix/phoenix.mjs"
ADMIN_TOKEN = "dashboard-admin-token-" + os.urandom(8).hex()
CLIENTS = 5
HTML_SINKS = re.compile(r"\.(?:inner|outer)HTML\b|insertAdjacentHTML|document\.write|\beval\(")


def test_dashboard_page_is_served_under_the_csp(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    html = response.text
    assert '<script type="module" src="/static/dashboard.js"></script>' in html
    assert '<link rel="stylesheet" href="/static/dashboard.css">' in html
    # The CSP would block inline code and styles: the page must not need any.
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "no inline <script>"
    assert "<style" not in html and not re.search(r"\sstyle=", html), "no inline styles"
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"
    assert 'type="password"' in html


def test_dashboard_assets_are_served(server: ServerProcess) -> None:
    script = httpx.get(f"{server.url}/static/dashboard.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert f'from "{PHOENIX_MJS}"' in script.text
    assert not HTML_SINKS.search(script.text), "data must go through textContent"
    assert 'setAttribute("style"' not in script.text
    style = httpx.get(f"{server.url}/static/dashboard.css")
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")


def test_socket_token_is_off_without_an_admin_token(server: ServerProcess) -> None:
    """The page tells a 404 (no admin token on the node) apart from a 401 (wrong token)."""
    response = httpx.post(
        f"{server.url}/api/admin/socket-token", headers={"Authorization": "Bearer anything"}
    )
    assert response.status_code == 404
    assert "error" in response.json()


def test_dashboard_in_a_real_browser(tmp_path: Path) -> None:
    node, chromium = browser_tools("playwright-core", "ws")
    env = {"SWITCHBOARD_ADMIN_TOKEN": ADMIN_TOKEN, "SWITCHBOARD_LIMITS": "off"}
    with running_server(env) as switchboard:
        wrong = httpx.post(
            f"{switchboard.url}/api/admin/socket-token",
            headers={"Authorization": "Bearer not-it"},
        )
        assert wrong.status_code == 401

        screenshot = tmp_path / "dashboard.png"
        script_env = {
            "BASE_URL": switchboard.url,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "NODE_NAME": switchboard.node,
            "USER_TOKENS": json.dumps(
                [switchboard.token(f"user-{i}") for i in range(1, CLIENTS + 1)]
            ),
            "CHROMIUM": chromium,
            "SCREENSHOT": os.environ.get("DASHBOARD_SCREENSHOT", str(screenshot)),
        }
        result, output = run_browser_script(node, SCRIPT, script_env)
    assert result.returncode == 0, output
    assert "PASS" in result.stdout, output
    assert Path(script_env["SCREENSHOT"]).stat().st_size > 0
