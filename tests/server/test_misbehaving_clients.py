"""Clients that misbehave (bad frames, not reading, silence) cost only their own connection."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from switchboard.client import AsyncClient, Client
from tests.server.nodes import node
from tests.support.clients import run
from tests.support.processes import ServerProcess

MAX_FRAME = 4096
OK = {"status": "ok", "response": {}}


@pytest.fixture(scope="module")
def strict() -> Iterator[ServerProcess]:
    with node({"SWITCHBOARD_MAX_FRAME_SIZE": str(MAX_FRAME)}) as running:
        yield running


@pytest.fixture(scope="module")
def small_outbox() -> Iterator[ServerProcess]:
    with node({"SWITCHBOARD_OUTBOX_LIMIT": "65536"}) as running:
        yield running


@pytest.fixture(scope="module")
def impatient() -> Iterator[ServerProcess]:
    """Drops slow consumers early and silent sockets after 2 s."""
    with node({"SWITCHBOARD_OUTBOX_LIMIT": "65536", "SWITCHBOARD_IDLE_TIMEOUT": "2"}) as running:
        yield running


# --- bad input

Offense = Callable[[AsyncClient, str], Coroutine[Any, Any, None]]


def text(data: str) -> Offense:
    async def offend(peer: AsyncClient, join_ref: str) -> None:
        await peer.send_raw(data)

    return offend


def binary(data: bytes) -> Offense:
    async def offend(peer: AsyncClient, join_ref: str) -> None:
        await peer.send_raw(data)

    return offend


async def invalid_utf8_text(peer: AsyncClient, join_ref: str) -> None:
    await peer.send_raw(b'["1","2","room:calm","ping",{"x":"\xff\xfe"}]', text=True)


CLOSING = [
    ("non-json", text("this is not json"), 1008),
    ("wrong-shape", text('["1","2","room:calm"]'), 1008),
    ("v1-object", text('{"topic":"room:calm","event":"ping","payload":{},"ref":"1"}'), 1008),
    ("non-string-ref", text('[null,5,"phoenix","heartbeat",{}]'), 1008),
    ("binary-garbage", binary(b"\xff\x00garbage\x01\x02"), 1008),
    ("binary-lengths-past-the-end", binary(bytes([0, 9, 9, 9, 9]) + b"short"), 1008),
    (
        "oversized-text",
        text(json.dumps([None, "9", "room:calm", "ping", {"p": "x" * MAX_FRAME}])),
        1009,
    ),
    (
        "oversized-binary",
        binary(bytes([0, 1, 1, 9, 4]) + b"11room:calmping" + b"x" * MAX_FRAME),
        1009,
    ),
    ("invalid-utf8-text", invalid_utf8_text, 1007),
]


def push(frame: list[Any]) -> Offense:
    async def offend(peer: AsyncClient, join_ref: str) -> None:
        await peer.send([join_ref if part == "JOIN_REF" else part for part in frame])

    return offend


def error(reason: str) -> dict[str, Any]:
    return {"status": "error", "response": {"reason": reason}}


ANSWERED = [
    (
        "unknown-event",
        push(["JOIN_REF", "50", "room:calm", "dance", {}]),
        error("unknown event 'dance'"),
    ),
    (
        "non-object-payload",
        push(["JOIN_REF", "50", "room:calm", "ping", [1, 2]]),
        error("invalid payload"),
    ),
    (
        "topic-not-joined",
        push([None, "50", "room:elsewhere", "ping", {}]),
        error("unmatched topic"),
    ),
    (
        "join-with-string-payload",
        push(["50", "50", "room:other", "phx_join", "x"]),
        error("invalid payload"),
    ),
]


async def calm_room(server: ServerProcess) -> tuple[AsyncClient, AsyncClient, str]:
    """A bystander and a shouter joined to room:calm; returns them and the shouter's join_ref."""
    bystander, shouter = await asyncio.gather(
        AsyncClient.connect(server.socket_url("bystander")),
        AsyncClient.connect(server.socket_url("shouter")),
    )
    await bystander.joined("room:calm")
    shouter_ref = await shouter.joined("room:calm")
    return bystander, shouter, shouter_ref


async def still_fine(
    server: ServerProcess, bystander: AsyncClient, shouter: AsyncClient, ref: str, n: int
) -> None:
    """The bystander gets the next shout, answers pings, and newcomers can still connect."""
    await shouter.push("room:calm", "shout", {"n": n}, join_ref=ref)
    frame = await bystander.event("room:calm", "shout")
    assert frame[4] == {"n": n, "user": "shouter"}
    assert (await bystander.call("room:calm", "ping", {"p": n}, join_ref="1"))[4]["status"] == "ok"
    assert (await bystander.reply(await bystander.heartbeat()))[4] == OK
    newcomer = await AsyncClient.connect(server.socket_url("newcomer"))
    await newcomer.joined("room:calm")
    await newcomer.close()


@pytest.mark.parametrize(
    ("offense", "code"), [(o, c) for _, o, c in CLOSING], ids=[i for i, _, _ in CLOSING]
)
def test_a_bad_frame_closes_only_the_offending_connection(
    strict: ServerProcess, offense: Offense, code: int
) -> None:
    async def scenario() -> None:
        bystander, shouter, ref = await calm_room(strict)
        await still_fine(strict, bystander, shouter, ref, 1)
        offender = await AsyncClient.connect(strict.socket_url("offender"))
        join_ref = await offender.joined("room:calm")
        await offense(offender, join_ref)
        assert await offender.closed() == code
        await still_fine(strict, bystander, shouter, ref, 2)
        await asyncio.gather(bystander.close(), shouter.close())

    run(scenario())


@pytest.mark.parametrize(
    ("offense", "reply"), [(o, r) for _, o, r in ANSWERED], ids=[i for i, _, _ in ANSWERED]
)
def test_a_bad_push_gets_an_error_reply_and_the_connection_stays(
    strict: ServerProcess, offense: Offense, reply: dict[str, Any]
) -> None:
    async def scenario() -> None:
        bystander, shouter, ref = await calm_room(strict)
        offender = await AsyncClient.connect(strict.socket_url("offender"))
        join_ref = await offender.joined("room:calm")
        await offense(offender, join_ref)
        assert (await offender.reply("50"))[4] == reply
        assert (await offender.reply(await offender.heartbeat()))[4] == OK
        await still_fine(strict, bystander, shouter, ref, 1)
        assert (await offender.event("room:calm", "shout"))[4] == {"n": 1, "user": "shouter"}
        await asyncio.gather(bystander.close(), shouter.close(), offender.close())

    run(scenario())


# --- slow consumers


def dropped(server: ServerProcess) -> bool:
    return any("slow consumer" in str(e.get("msg")) for e in server.logs)


async def flood(server: ServerProcess, topic: str, after_drop: int = 20) -> tuple[int, int, float]:
    """Shout 16 KiB payloads into ``topic`` one at a time, each read back by a reading client,
    until the server drops the slow consumer (plus ``after_drop`` more shouts).

    Returns shouts sent, shouts received in order, and the slowest round trip in seconds.
    """
    reader = await AsyncClient.connect(server.socket_url("reader"))
    join_ref = await reader.joined(topic)
    loop = asyncio.get_running_loop()
    pad = "x" * 16384
    sent = received = 0
    worst = 0.0
    remaining = None  # shouts still to send once the slow consumer was dropped
    while remaining != 0:
        if sent >= 1500:
            raise AssertionError("the stalled client was never dropped")
        started = loop.time()
        await reader.push(topic, "shout", {"n": sent, "pad": pad}, join_ref=join_ref)
        sent += 1
        frame = await reader.event(topic, "shout", timeout=3)
        assert frame[4]["n"] == received  # none lost, none out of order
        received += 1
        worst = max(worst, loop.time() - started)
        if remaining is None and dropped(server):
            remaining = after_drop
        elif remaining is not None:
            remaining -= 1
    assert (await reader.call(topic, "ping", {}, join_ref=join_ref))[4] == OK
    await reader.close()
    return sent, received, worst


def test_a_client_that_stops_reading_is_dropped_while_others_get_every_shout(
    small_outbox: ServerProcess,
) -> None:
    stalled = Client.connect(small_outbox.socket_url("stalled"), receive_buffer=4096)
    try:
        stalled.joined("room:flood")
        sent, received, worst = run(flood(small_outbox, "room:flood"), timeout=40)
    finally:
        stalled.close(wait=False)
    entry = small_outbox.wait_for_log(lambda e: "slow consumer" in str(e.get("msg")))
    assert "stalled" in str(entry["msg"])
    assert sent == received
    assert worst < 1.0, f"a shout took {worst:.2f}s to come back"


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="needs Linux TCP_INFO")
def test_a_dropped_slow_consumer_is_really_disconnected(impatient: ServerProcess) -> None:
    """Dropping a client that does not read must free its connection, not leave the server
    waiting forever to flush megabytes into a zero TCP window."""
    stalled = Client.connect(impatient.socket_url("stalled"), receive_buffer=4096)
    try:
        stalled.joined("room:hang")
        run(flood(impatient, "room:hang", after_drop=0), timeout=40)
        impatient.wait_for_log(lambda e: "slow consumer" in str(e.get("msg")))
        # Without reading, the client can see the end of the connection only as a reset:
        # a FIN would queue behind the data the server never managed to send.
        deadline = time.monotonic() + 5
        while tcp_state(stalled.sock) == TCP_ESTABLISHED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tcp_state(stalled.sock) != TCP_ESTABLISHED, (
            "5 s after dropping the slow consumer the server still holds its connection open"
        )
    finally:
        stalled.close(wait=False)


TCP_ESTABLISHED = 1


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


# --- idle sockets


def test_a_silent_socket_is_closed_with_1001_after_the_idle_timeout(
    impatient: ServerProcess,
) -> None:
    async def scenario() -> None:
        silent, chatty = await asyncio.gather(
            AsyncClient.connect(impatient.socket_url("silent")),
            AsyncClient.connect(impatient.socket_url("chatty")),
        )

        async def keep_talking() -> None:
            while True:
                assert (await chatty.reply(await chatty.heartbeat()))[4] == OK
                await asyncio.sleep(0.4)

        talking = asyncio.get_running_loop().create_task(keep_talking())
        try:
            assert await silent.closed(timeout=6) == 1001
        finally:
            talking.cancel()
        assert (await chatty.reply(await chatty.heartbeat()))[4] == OK  # heartbeats kept it open
        await chatty.close()

    run(scenario())
