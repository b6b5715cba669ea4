"""Hostile clients against one node's frame handling (issue 12, points 3 and 4): frames
that used to skip the limits, pings never read, and a backlog of frames from a few sockets;
each time a bystander keeps heartbeating and must stay connected and answered.

The hostile clients are raw sockets (tests/support/raw.py) in a child process, so that
they never hold up the bystander's own event loop; every loop is bounded, and only
loopback is used. The bystander's round trips are printed (``-s`` shows them).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import select
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import psutil
import pytest

from switchboard.client import AsyncClient
from tests.server.nodes import node
from tests.support.clients import run
from tests.support.processes import ServerProcess
from tests.support.raw import RawClient, ping_frame, text_frame

LIMITED = {"status": "error", "response": {"reason": "rate_limited"}}
FLOOD_DISCONNECT = 50


@pytest.fixture(scope="module")
def limited() -> Iterator[ServerProcess]:
    """Limits on, at their defaults (pushes 200 then 50/s, joins 50 then 10/s)."""
    env = {"SWITCHBOARD_LIMITS": "on", "SWITCHBOARD_CONNECT_RATE": "1000,1000"}
    with node(env) as running:
        yield running


@pytest.fixture(scope="module")
def unlimited() -> Iterator[ServerProcess]:
    """No rate limits (what a benchmark runs); a small outbox limit."""
    with node({"SWITCHBOARD_OUTBOX_LIMIT": "65536"}) as running:
        yield running


class Bystander:
    """A well-behaved client: joined to a room, it heartbeats every ``every`` seconds."""

    def __init__(self, peer: AsyncClient, every: float) -> None:
        self.peer = peer
        self.every = every
        self.round_trips: list[float] = []

    @classmethod
    async def start(cls, server: ServerProcess, every: float = 0.1) -> Bystander:
        peer = await AsyncClient.connect(server.socket_url("bystander"))
        await peer.joined("room:calm")
        return cls(peer, every)

    async def keep_going(self, done: asyncio.Future[Any]) -> None:
        loop = asyncio.get_running_loop()
        while not done.done():
            started = loop.time()
            reply = await self.peer.reply(await self.peer.heartbeat(), timeout=5)
            assert reply[4]["status"] == "ok"
            self.round_trips.append(loop.time() - started)
            await asyncio.sleep(self.every)

    def report(self, what: str) -> str:
        trips = sorted(self.round_trips)
        line = (
            f"bystander during {what}: {len(trips)} heartbeats, p50 "
            f"{1000 * statistics.median(trips):.1f} ms, max {1000 * trips[-1]:.1f} ms"
        )
        print(line)
        return line


async def alongside(
    server: ServerProcess, attack: Callable[..., Any], *args: Any, every: float = 0.1
) -> tuple[Any, Bystander]:
    """Run ``attack(*args)`` in a child process while a bystander heartbeats; then check
    that the bystander is still connected and answered."""
    bystander = await Bystander.start(server, every)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        done = asyncio.get_running_loop().run_in_executor(pool, attack, *args)
        await asyncio.gather(bystander.keep_going(done), done)
    assert (await bystander.peer.reply(await bystander.peer.heartbeat()))[4]["status"] == "ok"
    await bystander.peer.close()
    return done.result(), bystander


# -- every frame counts (issue 12 #4)

FRAMES = {
    "heartbeats": lambda n: [None, str(n), "phoenix", "heartbeat", {}],
    "pushes to a topic never joined": lambda n: [None, str(n), "room:never", "ping", {}],
    "joins of an unmatched topic": lambda n: [str(n), str(n), "nowhere:x", "phx_join", {}],
}


def flood(url: str, kind: str) -> tuple[list[Any], int | None]:
    """Send 2000 frames of ``kind`` in one write, then read what comes back."""
    client = RawClient(url)
    try:
        client.send_bytes(b"".join(text_frame(FRAMES[kind](n)) for n in range(2000)))
        return client.frames, client.read_to_end(timeout=5)
    finally:
        client.close()


@pytest.mark.parametrize("kind", list(FRAMES))
def test_a_flood_of_frames_that_skipped_the_limits_is_rate_limited_then_disconnected(
    limited: ServerProcess, kind: str
) -> None:
    url = limited.socket_url("flooder")
    (frames, code), bystander = run(alongside(limited, flood, url, kind), timeout=30)
    bystander.report(kind)
    assert code == 1008, f"the flooder was not disconnected; {len(frames)} frames answered"
    # Closed after FLOOD_DISCONNECT refusals in a row: a token refilled meanwhile (one per
    # 20 ms) lets one frame through and starts the count again, as on a loaded machine.
    in_a_row = 0
    for frame in reversed(frames):
        if frame[4] != LIMITED:
            break
        in_a_row += 1
    assert in_a_row == FLOOD_DISCONNECT, f"closed after {in_a_row} refusals in a row"
    assert len(frames) < 300, "a flood is answered only up to its burst"


def ping_flood(url: str) -> tuple[int, int | None]:
    """Send 2000 pings in one write, then read what comes back."""
    client = RawClient(url)
    try:
        client.send_bytes(ping_frame(b"x" * 125) * 2000)
        return client.pongs, client.read_to_end(timeout=5)
    finally:
        client.close()


def test_a_flood_of_pings_is_rate_limited_then_disconnected(limited: ServerProcess) -> None:
    url = limited.socket_url("pinger")
    (pongs, code), bystander = run(alongside(limited, ping_flood, url), timeout=30)
    bystander.report("a ping flood")
    assert code == 1008, f"the pinger was not disconnected after {pongs} pongs"
    assert pongs < 300, "pings are answered only up to the burst"


# -- pings never read (issue 12 #3)


def pings_unread(url: str) -> tuple[int, str]:
    """Send pings for up to 20 s, never reading; how many, and how it ended."""
    client = RawClient(url, rcvbuf=4096)
    burst = ping_frame(b"x" * 125) * 1000  # 131 KB: 1000 pongs of 127 bytes
    sent = 0
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            client.send_bytes(burst)
            sent += 1000
    except OSError as exc:  # reset by the server: what we want
        return sent, type(exc).__name__
    finally:
        client.close()
    return sent, "still connected after 20 s"


def test_a_client_that_pings_and_never_reads_its_pongs_is_dropped_as_a_slow_consumer(
    unlimited: ServerProcess,
) -> None:
    server_process = psutil.Process(unlimited.process.pid)
    rss_before = server_process.memory_info().rss
    url = unlimited.socket_url("never-reads")
    (sent, outcome), bystander = run(alongside(unlimited, pings_unread, url), timeout=60)
    bystander.report("pings never read")
    growth = (server_process.memory_info().rss - rss_before) / 2**20
    print(f"{sent} pings sent until {outcome}; server RSS grew {growth:.1f} MiB")
    assert outcome in ("ConnectionResetError", "BrokenPipeError"), outcome
    assert growth < 50, f"the server kept {growth:.0f} MiB of pongs"
    unlimited.wait_for_log(
        lambda e: "slow consumer" in str(e.get("msg")) and "never-reads" in str(e)
    )


# -- a backlog of frames must not hold the loop (issue 12 #4)


BURST = 5000  # heartbeats in one write: 215 KB, about what the server takes in one read


def bursts(url: str, seconds: float) -> int:
    """Send heartbeats in writes of :data:`BURST` for ``seconds``, reading the replies in a
    thread (so this is no slow consumer); how many were sent."""
    client = RawClient(url)
    client.sock.settimeout(30)  # a write waits while the server works through the last one
    burst = b"".join(text_frame(FRAMES["heartbeats"](n)) for n in range(BURST))
    stop = threading.Event()
    reader = threading.Thread(target=drain, args=(client, stop))
    reader.start()
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            client.send_bytes(burst)
            sent += BURST
    finally:
        stop.set()
        reader.join(5)
        client.close()
    return sent


def five_bursting(urls: list[str]) -> list[int]:
    with ThreadPoolExecutor(len(urls)) as pool:
        return list(pool.map(bursts, urls, [3.0] * len(urls)))


def test_sockets_sending_huge_bursts_do_not_hold_up_a_bystander(unlimited: ServerProcess) -> None:
    urls = [unlimited.socket_url(f"burst-{i}") for i in range(5)]
    counts, bystander = run(alongside(unlimited, five_bursting, urls, every=0.02), timeout=60)
    line = bystander.report(f"5 sockets sending {sum(counts)} heartbeats in writes of {BURST}")
    trips = sorted(bystander.round_trips)
    assert trips[int(0.9 * len(trips))] < 0.2, line


def drain(client: RawClient, stop: threading.Event) -> None:
    """Read (and drop) whatever the server sends until ``stop``. (It waits in select: the
    socket's timeout is the writer's.)"""
    while not stop.is_set():
        readable, _, _ = select.select([client.sock], [], [], 0.2)
        try:
            if readable and not client.sock.recv(1 << 20):
                return
        except OSError:
            return
