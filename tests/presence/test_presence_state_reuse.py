"""presence_state is built at most once per window of presence changes, not once per joiner."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tests.support.processes import ServerProcess, running_server

JOINERS = 100
WINDOW = 0.05  # SWITCHBOARD_PRESENCE_WINDOW's default


async def _join(server: ServerProcess, user: str) -> tuple[ClientConnection, dict[str, object]]:
    """Join; return the presence_state, once the joiner has seen itself (in the state, or in
    a diff after it when the state was built before its own join)."""
    ws = await connect(server.socket_url(user))
    await ws.send(json.dumps(["1", "1", "room:busy", "phx_join", {}]))
    state: dict[str, object] | None = None
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame[3] == "presence_state":
            state = frame[4]
            seen = user in state
        elif frame[3] == "presence_diff" and state is not None:
            seen = user in frame[4]["joins"]
        else:
            continue
        if seen:
            assert state is not None
            return ws, state


def _builds(server: ServerProcess) -> int:
    return int(httpx.get(f"{server.url}/test/actors", timeout=5).json()["presence_state_builds"])


def test_a_burst_of_joiners_shares_a_few_builds_of_presence_state() -> None:
    with running_server({"SWITCHBOARD_LIMITS": "off"}) as server:
        before = _builds(server)
        started = time.monotonic()

        async def burst() -> list[tuple[ClientConnection, dict[str, object]]]:
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
