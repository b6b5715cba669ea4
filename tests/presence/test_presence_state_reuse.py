"""presence_state is built once per change of a topic, not once per joiner."""

from __future__ import annotations

import asyncio
import json

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tests.support.processes import ServerProcess, running_server

JOINERS = 100


async def _join(server: ServerProcess, user: str) -> tuple[ClientConnection, dict[str, object]]:
    ws = await connect(server.socket_url(user))
    await ws.send(json.dumps(["1", "1", "room:busy", "phx_join", {}]))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame[3] == "presence_state":
            return ws, frame[4]


def _builds(server: ServerProcess) -> int:
    return int(httpx.get(f"{server.url}/test/actors", timeout=5).json()["presence_state_builds"])


def test_a_burst_of_joiners_shares_a_few_builds_of_presence_state() -> None:
    with running_server({"SWITCHBOARD_LIMITS": "off"}) as server:
        before = _builds(server)

        async def burst() -> list[tuple[ClientConnection, dict[str, object]]]:
            joined = await asyncio.gather(*(_join(server, f"user{i}") for i in range(JOINERS)))
            return list(joined)

        async def run() -> int:
            joined = await burst()
            # Each state is complete for its joiner's moment: it holds at least the joiner.
            assert all(f"user{i}" in state for i, (_, state) in enumerate(joined))
            for ws, _ in joined:
                await ws.close()
            return len(joined)

        assert asyncio.run(run()) == JOINERS
        builds = _builds(server) - before
        assert 1 <= builds <= JOINERS // 2, f"{builds} builds for {JOINERS} concurrent joiners"
