"""Both ways frames travel between uvicorn and a socket: the direct paths (frames taken
from uvicorn's parser and written to its transport) and the ASGI path they fall back to
(``SWITCHBOARD_DIRECT_IO=off`` forces it). Every test runs on both."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.server.nodes import node
from tests.server.wire import open_peer, run
from tests.support.processes import ServerProcess

WAIT = 5.0


@pytest.fixture(scope="module", params=["direct", "asgi"])
def path(request: pytest.FixtureRequest) -> Iterator[tuple[str, ServerProcess]]:
    env = {"SWITCHBOARD_DIRECT_IO": "on" if request.param == "direct" else "off"}
    with node(env) as running:
        yield request.param, running


class RawClient:
    """A WebSocket client on a plain socket: it sends whatever bytes it is told, when told.

    (It sends no frame along with the upgrade request: uvicorn drops bytes that follow the
    request in the same read.)"""

    def __init__(self, url: str) -> None:
        self.protocol = ClientProtocol(parse_uri(url))
        uri = self.protocol.uri
        self.sock = socket.create_connection((uri.host, uri.port), timeout=WAIT)
        self.protocol.send_request(self.protocol.connect())
        self.sock.sendall(b"".join(self.protocol.data_to_send()))
        self.outgoing = b""
        self.frames: list[Any] = []
        self.read_until(0)

    def queue_text(self, frame: list[Any]) -> None:
        """Add a frame to what goes out with the next :meth:`send_all`."""
        data = json.dumps(frame).encode()
        self.outgoing += Frame(Opcode.TEXT, data).serialize(mask=True, extensions=[])

    def send_all(self) -> None:
        self.sock.sendall(self.outgoing)
        self.outgoing = b""

    def read_until(self, count: int) -> list[Any]:
        """Read until ``count`` text frames came (the handshake response is checked)."""
        while len(self.frames) < count or self.protocol.state is State.CONNECTING:
            data = self.sock.recv(65536)
            assert data, f"connection closed after {len(self.frames)} frames"
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if isinstance(event, Response):
                    assert event.status_code == 101, event
                elif event.opcode is Opcode.TEXT:
                    self.frames.append(json.loads(event.data))
        return self.frames

    def close(self) -> None:
        self.sock.close()


def test_the_node_logs_once_which_io_path_it_takes(path: tuple[str, ServerProcess]) -> None:
    kind, server = path

    async def scenario() -> None:
        for user in ("log-a", "log-b"):
            peer = await open_peer(server.socket_url(user))
            await peer.heartbeat()
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
        client.queue_text(["1", "1", "room:burst", "phx_join", {}])
        client.send_all()
        client.read_until(1)
        for n in range(2, 1002):
            client.queue_text(["1", str(n), "room:burst", "ping", {"n": n}])
        client.send_all()
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
        peer = await open_peer(server.socket_url("sizes"))
        join_ref = await peer.joined("room:sizes")
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        ref = await peer.push_binary(join_ref, "room:sizes", "ping", data)
        reply = await peer.expect(lambda f: isinstance(f, bytes))
        assert isinstance(reply, bytes) and reply.endswith(data)
        assert ref.encode() in reply[:64]
        await peer.close()

    run(scenario())


def test_a_websocket_ping_gets_its_pong(path: tuple[str, ServerProcess]) -> None:
    _, server = path

    async def scenario() -> None:
        peer = await open_peer(server.socket_url("pinger"))
        pong = await peer.ws.ping(b"are you there")
        await asyncio.wait_for(pong, WAIT)
        await peer.close()

    run(scenario())
