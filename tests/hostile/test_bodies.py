"""Large HTTP bodies and cache values: answered 413 as soon as they pass their limit, and the
node's memory does not grow with what the client sends or stores."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.hostile.bystander import bystander
from tests.support.nodes import running_node
from tests.support.processes import ServerProcess

API_KEY = "hostile-api-key-" + "b" * 16
MAX_FRAME = 64 * 1024
CACHE_MAX_VALUE = 256 * 1024
CACHE_MAX_BYTES = 1024 * 1024
MB = 1024 * 1024


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    env = {
        "SWITCHBOARD_API_KEY": API_KEY,
        "SWITCHBOARD_MAX_FRAME_SIZE": str(MAX_FRAME),
        "SWITCHBOARD_CACHE_MAX_VALUE": str(CACHE_MAX_VALUE),
        "SWITCHBOARD_CACHE_MAX_BYTES": str(CACHE_MAX_BYTES),
        "SWITCHBOARD_HTTP_RATE": "1000,1000",
        "SWITCHBOARD_CONNECT_RATE": "1000,1000",
    }
    with running_node(env) as node:
        yield node


def rss(server: ServerProcess) -> int:
    with open(f"/proc/{server.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _send_chunked_until_answered(
    server: ServerProcess, method: str, path: str, budget: int
) -> tuple[bytes, int]:
    """Stream a chunked body of up to ``budget`` bytes; stop once the server answers.
    Returns the answer and how many body bytes went out before it."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (MB, b" " * MB)
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head.encode() + b'3\r\n{"v\r\n')
        sock.setblocking(False)
        deadline = time.monotonic() + 20
        while sent < budget and time.monotonic() < deadline:
            try:
                answer = sock.recv(4096)
            except BlockingIOError:
                answer = b""
            if answer:
                return answer, sent
            try:
                sent += sock.send(chunk)  # a partial send is fine: it is all spaces
            except BlockingIOError:
                time.sleep(0.01)  # the server is not reading: give it a moment to answer
            except OSError:
                break
        sock.setblocking(True)
        return sock.recv(4096), sent


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/api/broadcast"), ("PUT", "/api/cache/hostile:big")]
)
def test_a_streamed_body_far_over_the_limit_is_answered_413_early_and_memory_stays_flat(
    server: ServerProcess, method: str, path: str
) -> None:
    before = rss(server)
    with bystander(server, f"200 MB streamed to {method} {path}"):
        answer, sent = _send_chunked_until_answered(server, method, path, 200 * MB)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert sent < 50 * MB, f"answered only after {sent // MB} MB"
    grown = rss(server) - before
    assert grown < 30 * MB, f"the node grew by {grown // MB} MB"


def test_cache_puts_beyond_the_cache_budget_evict_the_oldest_and_memory_stays_flat(
    server: ServerProcess,
) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    value = "v" * (200 * 1024)
    before = rss(server)
    with (
        bystander(server, "200 cache PUTs of 200 KiB into a 1 MiB cache"),
        httpx.Client(base_url=server.url, headers=headers, timeout=10) as api,
    ):
        for n in range(200):
            assert api.put(f"/api/cache/hostile:{n}", json={"value": value}).status_code == 201
        present = [n for n in range(200) if api.get(f"/api/cache/hostile:{n}").status_code == 200]
        too_big = api.put("/api/cache/hostile:huge", json={"value": "v" * (CACHE_MAX_VALUE + 1)})
    assert present == list(range(195, 200)), "the 1 MiB budget holds the last five"
    assert too_big.status_code == 413
    grown = rss(server) - before
    assert grown < 20 * MB, f"the node grew by {grown // MB} MB"
