"""Both ways frames travel between uvicorn and a socket: the direct paths (frames taken
from uvicorn's parser and written to its transport) and the ASGI path they fall back to
(``SWITCHBOARD_DIRECT_IO=off`` forces it). Every test runs on both."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from switchboard.client import AsyncClient
from tests.server.nodes import node
from tests.support.clients import run
from tests.support.processes import ServerProcess
from tests.support.raw import RawClient

WAIT = 5.0


@pytest.fixture(scope="module", params=["direct", "asgi"])
def path(request: pytest.FixtureRequest) -> Iterator[tuple[str, ServerProcess]]:
    env = {"SWITCHBOARD_DIRECT_IO": "on" if request.param == "direct" else "off"}
    with node(env) as running:
        yield request.param, running


def test_the_node_logs_once_which_io_path_it_takes(path: tuple[str, ServerProcess]) -> None:
    kind, server = path

    async def scenario() -> None:
        for user in ("log-a", "log-b"):
            peer = await AsyncClient.connect(server.socket_url(user))
            await peer.reply(await peer.heartbeat())
            await peer.close()

    run(scenario())
    entry = server.wait_for_log(lambda e: e.get("event") == "io_path")
    assert (entry["write"], entry["read"]) == (kind, kind)
    assert sum(1 for e in server.logs if e.get("event") == "io_path") == 1


def test_a_burst_of_frames_in_one_write_is_answered_in_order(
    path: tuple[str, ServerProcess],
) -> None:
    _, server = path
    client = RawClient(server.socket_url("burst"))
    try:
        client.send(["1", "1", "room:burst", "phx_join", {}])
        client.read_until(1)
        client.send(*(["1", str(n), "room:burst", "ping", {"n": n}] for n in range(2, 1002)))
        frames = client.read_until(1001)
    finally:
        client.close()
    assert [f[1] for f in frames[1:]] == [str(n) for n in range(2, 1002)]


@pytest.mark.parametrize("size", [100, 125, 126, 127, 65535, 65536, 65537, 200_000])
def test_binary_payloads_across_frame_header_sizes_come_back_whole(
    path: tuple[str, ServerProcess], size: int
) -> None:
    _, server = path

    async def scenario() -> None:
        peer = await AsyncClient.connect(server.socket_url("sizes"))
        join_ref = await peer.joined("room:sizes")
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        ref = await peer.push_binary("room:sizes", "ping", data, join_ref=join_ref)
        reply = await peer.expect("binary reply", lambda f: isinstance(f, bytes))
        assert isinstance(reply, bytes) and reply.endswith(data)
        assert ref.encode() in reply[:64]
        await peer.close()

    run(scenario())


def test_a_websocket_ping_gets_its_pong(path: tuple[str, ServerProcess]) -> None:
    _, server = path

    async def scenario() -> None:
        peer = await AsyncClient.connect(server.socket_url("pinger"))
        pong = await peer.connection.ping(b"are you there")
        await asyncio.wait_for(pong, WAIT)
        await peer.close()

    run(scenario())
