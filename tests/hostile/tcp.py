"""Raw TCP clients for the attacks: bounded in count and in time, loopback only."""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import httpx

from tests.support.processes import ServerProcess


@dataclass
class Outcome:
    """What one attacking connection got: the bytes the server sent and when it closed."""

    data: bytes = b""
    closed_after: float | None = None

    @property
    def status(self) -> int | None:
        if not self.data.startswith(b"HTTP/1.1 "):
            return None
        return int(self.data[9:12])


@contextmanager
def connections(server: ServerProcess, count: int) -> Iterator[list[socket.socket]]:
    """``count`` TCP connections to ``server``, closed on exit."""
    with ExitStack() as stack:
        socks = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", server.port), 5))
            sock.setblocking(False)
            socks.append(sock)
        yield socks


def watch(
    socks: list[socket.socket],
    budget: float,
    trickle: bytes = b"",
    every: float = 0.2,
) -> list[Outcome]:
    """Read every socket until the server closes it or ``budget`` seconds pass; meanwhile
    send the next byte of ``trickle`` to each still-open socket every ``every`` seconds
    (a slowloris). Times are from the call."""
    started = time.monotonic()
    outcomes = {sock: Outcome() for sock in socks}
    open_ = set(socks)
    sent = 0
    next_byte = started
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        while open_ and (now := time.monotonic()) < started + budget:
            if trickle and sent < len(trickle) and now >= next_byte:
                for sock in list(open_):
                    try:
                        sock.send(trickle[sent : sent + 1])
                    except OSError:
                        pass  # closed by the server: the read below finds out
                sent += 1
                next_byte += every
            timeout = min(every, started + budget - now)
            for key, _ in selector.select(timeout):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    outcomes[sock].data += chunk
                    continue
                outcomes[sock].closed_after = time.monotonic() - started
                selector.unregister(sock)
                open_.discard(sock)
    return [outcomes[sock] for sock in socks]


def request(server: ServerProcess, data: bytes, budget: float = 5.0, pieces: int = 1) -> Outcome:
    """Send ``data`` (in ``pieces``, 50 ms apart) on a new connection and read until the
    server closes it."""
    size = -(-len(data) // pieces)
    with connections(server, 1) as (sock,):
        sock.setblocking(True)
        try:
            for start in range(0, len(data), size):
                if start:
                    time.sleep(0.05)  # pacing the sender: each piece its own read
                sock.sendall(data[start : start + size])
        except OSError:
            pass  # answered and closed before all of it went: read what came
        sock.setblocking(False)
        return watch([sock], budget)[0]


def open_connections(server: ServerProcess) -> int:
    """The node's ``switchboard_tcp_connections`` (this request's own connection included)."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("switchboard_tcp_connections{"):
            return int(float(line.rsplit(" ", 1)[1]))
    raise AssertionError(f"no switchboard_tcp_connections in /metrics: {text[:300]}")


def settle(server: ServerProcess, at_most: int, budget: float = 5.0) -> None:
    """Wait until the node counts at most ``at_most`` open connections besides the asking
    one (the server handles a client's close a moment after the client made it)."""
    deadline = time.monotonic() + budget
    while (count := open_connections(server) - 1) > at_most:
        assert time.monotonic() < deadline, f"{count} connections still open after {budget}s"
        time.sleep(0.02)
