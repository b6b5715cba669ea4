"""Both ways frames travel between uvicorn and a socket: the direct paths (frames taken
from uvicorn's parser and written to its transport) and the ASGI path they fall back to
(``SWITCHBOARD_DIRECT_IO=off`` forces it). Every test runs on both."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from websockets.frames import Frame, Opcode

from switchboard.client import AsyncClient
from tests.server.nodes import node
from tests.support.clients import run
from tests.support.processes import ServerProcess
from tests.support.raw import RawClient, ping_frame, text_frame

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


def test_pushes_split_anywhere_around_pings_and_a_fragmented_one_are_answered_in_order(
    path: tuple[str, ServerProcess],
) -> None:
    """The direct reader cuts whole frames off the stream itself; a ping goes to websockets
    alone (and is answered), a fragmented message makes websockets parse from there on."""
    _, server = path
    client = RawClient(server.socket_url("mixed"))
    try:
        client.send(["1", "1", "room:mixed", "phx_join", {}])
        client.read_until(1)
        push = {n: text_frame(["1", str(n), "room:mixed", "ping", {"n": n}]) for n in range(2, 7)}
        fragmented = json.dumps(["1", "5", "room:mixed", "ping", {"n": 5}]).encode()
        stream = b"".join(
            [
                push[2],
                ping_frame(b"one"),
                push[3],
                push[4],
                Frame(Opcode.TEXT, fragmented[:9], fin=False).serialize(mask=True, extensions=[]),
                Frame(Opcode.CONT, fragmented[9:]).serialize(mask=True, extensions=[]),
                push[6],
                ping_frame(b"two"),
            ]
        )
        for at in range(0, len(stream), 7):  # seven bytes per write: headers split too
            client.send_bytes(stream[at : at + 7])
        frames = client.read_until(6)
        client.read_until_pongs(2)
    finally:
        client.close()
    assert [(f[1], f[4]) for f in frames[1:]] == [
        (str(n), {"status": "ok", "response": {"n": n}}) for n in range(2, 7)
    ]


def test_text_that_is_not_utf8_after_good_pushes_closes_with_1007(
    path: tuple[str, ServerProcess],
) -> None:
    _, server = path
    client = RawClient(server.socket_url("badtext"))
    try:
        client.send(["1", "1", "room:badtext", "phx_join", {}])
        client.read_until(1)
        good = text_frame(["1", "2", "room:badtext", "ping", {}])
        payload = b'["1","3","room:badtext","ping",{"x":"\xff\xfe"}]'
        bad = Frame(Opcode.TEXT, payload).serialize(mask=True, extensions=[])
        client.send_bytes(good + bad)
        code = client.read_to_end()
    finally:
        client.close()
    # A reply still on its way when the client broke the protocol may be dropped (the
    # connection is failed, RFC 6455 7.1.7); the close code says why.
    assert code == 1007
