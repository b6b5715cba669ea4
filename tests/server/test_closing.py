"""Closing from the server side: what is queued for the client goes out before the close
frame, within the close timeout; only a slow consumer is reset at once."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from switchboard.client import AsyncClient, Client, Closed
from tests.server.nodes import node
from tests.support.clients import run
from tests.support.processes import ServerProcess

SHOUTS = 400
PAD = (
    "x" * 16384
)  # 400 x 16 KiB: more than the kernel buffers (up to 4 MiB) take for a client not reading


@pytest.fixture(scope="module")
def idle_closing() -> Iterator[ServerProcess]:
    """Closes silent sockets after 3 s; room for everything the tests queue."""
    with node(
        {
            "SWITCHBOARD_IDLE_TIMEOUT": "3",
            "SWITCHBOARD_OUTBOX_LIMIT": str(8 * 1024 * 1024),
            "SWITCHBOARD_CLOSE_TIMEOUT": "4",
        }
    ) as running:
        yield running


def shout_at(server: ServerProcess, topic: str, count: int) -> None:
    """Another client shouts ``count`` numbered 16 KiB messages into ``topic``."""

    async def scenario() -> None:
        shouter = await AsyncClient.connect(server.socket_url("shouter"))
        join_ref = await shouter.joined(topic)
        for n in range(count):
            await shouter.push(topic, "shout_from", {"n": n, "pad": PAD}, join_ref=join_ref)
        assert (await shouter.call(topic, "ping", {}, join_ref=join_ref))[4]["status"] == "ok"
        await shouter.close()

    run(scenario())


def idle_closed(server: ServerProcess, user: str) -> None:
    server.wait_for_log(lambda e: "closing idle socket" in str(e.get("msg")) and user in str(e))


def test_an_idle_close_first_delivers_everything_queued_then_the_close_frame(
    idle_closing: ServerProcess,
) -> None:
    reader = Client.connect(idle_closing.socket_url("late-reader"), receive_buffer=4096)
    try:
        reader.joined("room:backlog")
        shout_at(idle_closing, "room:backlog", SHOUTS)
        idle_closed(idle_closing, "late-reader")
        code = reader.closed()
    finally:
        reader.close(wait=False)
    shouts = [f[4]["n"] for f in reader.frames if isinstance(f, list) and f[3] == "shout"]
    assert shouts == list(range(SHOUTS)), "the close dropped shouts queued before it"
    assert code == 1001


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="needs Linux TCP_INFO")
def test_a_client_that_never_reads_its_close_frame_is_reset_after_the_close_timeout(
    idle_closing: ServerProcess,
) -> None:
    stalled = Client.connect(idle_closing.socket_url("never-reads"), receive_buffer=4096)
    try:
        stalled.joined("room:stuck")
        shout_at(idle_closing, "room:stuck", SHOUTS)
        idle_closed(idle_closing, "never-reads")
        closed_at = time.monotonic()
        deadline = closed_at + 4 + 5
        while tcp_state(stalled.sock) == TCP_ESTABLISHED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tcp_state(stalled.sock) != TCP_ESTABLISHED, "still connected 5 s past the timeout"
        assert time.monotonic() - closed_at > 3, "reset before the close timeout"
        with pytest.raises(Closed, match="ConnectionResetError"):
            while True:  # what was queued is gone with the reset: no close frame comes
                stalled.recv()
    finally:
        stalled.close(wait=False)


def test_a_close_with_nothing_queued_sends_the_close_frame_at_once(
    idle_closing: ServerProcess,
) -> None:
    async def scenario() -> None:
        quiet = await AsyncClient.connect(idle_closing.socket_url("quiet"))
        await quiet.joined("room:quiet")
        assert await quiet.closed(timeout=8) == 1001

    run(scenario())


TCP_ESTABLISHED = 1


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
