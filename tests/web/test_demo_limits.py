"""The demo page at its limits, in headless Chromium (tests/web/demo_limits.mjs): a refused
socket says why and stops retrying where retrying can't help, a rate-limited connect keeps
trying, a rate-limited shout shows "slow down", and a busy room's online list scrolls
instead of pushing the input off screen (desktop and phone width).

Screenshots are kept under the pytest tmp folder printed by each test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.browser import browser_tools, run_browser_script
from tests.support.processes import ServerProcess, running_server

SCRIPT = Path(__file__).with_name("demo_limits.mjs")
API_KEY = "demo-limits-" + os.urandom(8).hex()


@pytest.fixture(scope="module")
def limited() -> Iterator[ServerProcess]:
    """A dev node (the page needs /dev/token) with two sockets per user and a tight push rate;
    connects are not limited, so the scenarios don't count against each other."""
    env = {
        "SWITCHBOARD_PROFILE": "dev",
        "SWITCHBOARD_USER_SOCKET_LIMIT": "2",
        "SWITCHBOARD_PUSH_RATE": "3,0.2",
        "SWITCHBOARD_CONNECT_RATE": "1000,1000",
        "SWITCHBOARD_HTTP_RATE": "1000,1000",
        "SWITCHBOARD_API_KEY": API_KEY,
    }
    with running_server(env) as node:
        yield node


def drive(base_url: str, scenario: str, screenshots: Path) -> None:
    node, chromium = browser_tools("playwright-core", "ws")
    env = {
        "BASE_URL": base_url,
        "SCENARIO": scenario,
        "CHROMIUM": chromium,
        "SCREENSHOT_DIR": str(screenshots),
        "API_KEY": API_KEY,
    }
    print(f"screenshots: {screenshots}")
    result, output = run_browser_script(node, SCRIPT, env)
    assert result.returncode == 0, output
    assert "PASS" in result.stdout, output


def test_the_refusal_endpoint_says_why_a_socket_was_refused(limited: ServerProcess) -> None:
    """What the page relies on: the refusal of the caller's own socket, with whether a
    retry can help; a per-user refusal is told only to a caller of that user."""
    from switchboard.client import Client

    user = "refusal-probe"
    url = limited.socket_url(user)
    with Client.connect(url), Client.connect(url):
        assert Client.refusal(url).status == 403
        mine = httpx.get(f"{limited.url}/socket/refusal", params={"token": limited.token(user)})
        someone_else = httpx.get(
            f"{limited.url}/socket/refusal", params={"token": limited.token("bystander")}
        )
    refusal = mine.json()["refusal"]
    assert refusal["status"] == 403 and refusal["code"] == "socket_limit", refusal
    assert refusal["retry"] is False and "2 sockets" in refusal["reason"], refusal
    assert someone_else.json() == {"refusal": None}

    forged = httpx.get(f"{limited.url}/socket/refusal", params={"token": "not-a-token"})
    assert forged.json()["refusal"]["code"] == "unauthorized"
    assert forged.json()["refusal"]["retry"] is False


def test_a_tab_over_the_per_user_limit_or_with_a_bad_token_says_why_and_stops_retrying(
    limited: ServerProcess, tmp_path: Path
) -> None:
    drive(limited.url, "socket_limit", tmp_path)


def test_a_rate_limited_shout_shows_slow_down_instead_of_vanishing(
    limited: ServerProcess, tmp_path: Path
) -> None:
    drive(limited.url, "slow_down", tmp_path)


def test_a_busy_rooms_online_list_scrolls_and_the_input_stays_on_screen_on_desktop_and_phone(
    limited: ServerProcess, tmp_path: Path
) -> None:
    drive(limited.url, "busy_room", tmp_path)


def test_a_rate_limited_connect_says_so_and_connects_once_the_limit_allows(
    tmp_path: Path,
) -> None:
    env = {"SWITCHBOARD_PROFILE": "dev", "SWITCHBOARD_CONNECT_RATE": "2,0.5"}
    with running_server(env) as node:
        drive(node.url, "connect_rate", tmp_path)
