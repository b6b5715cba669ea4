"""presence_state is built at most once per window of presence changes, not once per joiner."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from switchboard.client import AsyncClient
from tests.support.processes import ServerProcess, running_server

JOINERS = 100
WINDOW = 0.05  # SWITCHBOARD_PRESENCE_WINDOW's default


async def _join(server: ServerProcess, user: str) -> tuple[AsyncClient, dict[str, object]]:
    """Join; return the presence_state, once the joiner has seen itself (in the state, or in
    a diff after it when the state was built before its own join)."""
    client = await AsyncClient.connect(server.socket_url(user))
    await client.join("room:busy")
    state: dict[str, Any] = (await client.event("room:busy", "presence_state", timeout=10))[4]

    def sees_itself(frame: Any) -> bool:
        return isinstance(frame, list) and frame[3] == "presence_diff" and user in frame[4]["joins"]

    if user not in state:
        await client.expect(f"{user}'s own join", sees_itself, timeout=10)
    return client, state


def _builds(server: ServerProcess) -> int:
    return int(httpx.get(f"{server.url}/test/actors", timeout=5).json()["presence_state_builds"])


def test_a_burst_of_joiners_shares_a_few_builds_of_presence_state() -> None:
    with running_server({"SWITCHBOARD_LIMITS": "off"}) as server:
        before = _builds(server)
        started = time.monotonic()

        async def burst() -> list[tuple[AsyncClient, dict[str, object]]]:
            joined = await asyncio.gather(*(_join(server, f"user{i}") for i in range(JOINERS)))
            return list(joined)

        async def run() -> int:
            joined = await burst()
            for ws, _ in joined:
                await ws.close()
            return len(joined)

        assert asyncio.run(run()) == JOINERS
        windows = (time.monotonic() - started) / WINDOW
        builds = _builds(server) - before
        assert 1 <= builds <= min(JOINERS // 2, windows + 1), (
            f"{builds} builds for {JOINERS} concurrent joiners over {windows:.0f} windows"
        )
