"""The connection guard's own parts (server.guard): counting, deciding, logging, limits.

What clients see of it over real sockets is in tests/hostile/.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import subprocess
import sys
from typing import Any

import pytest
import uvicorn

from switchboard.server.guard import ConnectionGuard, protocols


def guard(**options: Any) -> ConnectionGuard:
    settings: dict[str, Any] = {
        "request_timeout": 5.0,
        "max_request_head": 4096,
        "max_connections": 10,
        "max_per_address": 2,
        **options,
    }
    return ConnectionGuard(**settings)


class FakeTransport:
    def __init__(self, address: str = "192.0.2.1") -> None:
        self.address = address
        self.written = b""
        self.closed = False
        self.protocol: Any = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": (self.address, 40000), "sockname": ("127.0.0.1", 4000)}.get(
            name, default
        )

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_protocol(self) -> Any:
        return self.protocol

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_a_third_connection_from_one_address_is_refused_with_429_until_one_is_released() -> None:
    connections = guard()
    first, second, third = FakeTransport(), FakeTransport(), FakeTransport()
    assert connections.admit(first) is None and connections.admit(second) is None
    refusal = connections.admit(third)
    assert refusal is not None and refusal.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
    assert b"retry-after: 5\r\n" in refusal and b"connection: close\r\n" in refusal
    assert connections.admit(FakeTransport("192.0.2.2")) is None, "other addresses are not"

    connections.release(first)
    connections.release(first)  # twice: counted once
    assert connections.admit(third) is None
    assert connections.refused == {"max_connections_per_address": 1}
    assert connections.open_connections == 3


def test_past_the_total_every_new_connection_is_refused_with_503() -> None:
    connections = guard(max_connections=3, max_per_address=0)
    transports = [FakeTransport(f"192.0.2.{n}") for n in range(4)]
    assert [connections.admit(t) is None for t in transports] == [True, True, True, False]
    connections.release(transports[0])
    assert connections.admit(transports[3]) is None
    assert connections.refused == {"max_connections": 1}


def test_a_trusted_proxy_is_not_capped_but_the_clients_it_forwards_are() -> None:
    connections = guard(trusted_proxies=("10.0.0.0/8",))
    proxied = [FakeTransport("10.0.0.5") for _ in range(4)]
    assert all(connections.admit(t) is None for t in proxied)
    assert connections.admit_forwarded(proxied[0], "198.51.100.7")
    assert connections.admit_forwarded(proxied[1], "198.51.100.7")
    assert not connections.admit_forwarded(proxied[2], "198.51.100.7")
    assert connections.admit_forwarded(proxied[3], "198.51.100.8")
    connections.release(proxied[0])
    assert connections.admit_forwarded(proxied[2], "198.51.100.7")


def _accept_failed(loop: Any, handler: Any, code: int = errno.EMFILE) -> None:
    exc = OSError(code, "Too many open files")
    handler(loop, {"message": "socket.accept() out of system resource", "exception": exc})


class FakeLoop:
    now = 100.0

    def time(self) -> float:
        return self.now


def test_failing_accepts_are_logged_once_per_interval_with_how_many_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connections = guard()
    passed_on: list[dict[str, Any]] = []
    handler = connections.exception_handler(lambda loop, context: passed_on.append(context))
    loop = FakeLoop()
    with caplog.at_level(logging.ERROR, logger="switchboard.guard"):
        for _ in range(2000):
            _accept_failed(loop, handler)
        loop.now += 10.0
        for _ in range(500):
            _accept_failed(loop, handler)
        handler(loop, {"message": "something else", "exception": RuntimeError("x")})

    lines = [r for r in caplog.records if r.name == "switchboard.guard"]
    assert [getattr(r, "count", None) for r in lines] == [1, 2000]
    assert "Too many open files" in lines[0].getMessage()
    assert connections.accept_errors == 2500
    assert [c["message"] for c in passed_on] == ["something else"]


def test_the_soft_open_file_limit_is_raised_to_the_hard_limit() -> None:
    script = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))\n"
        "from switchboard.server.guard import raise_fd_limit\n"
        "limit = raise_fd_limit()\n"
        "now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]\n"
        "print(limit.was, limit.soft == hard, now == hard)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20, check=True
    )
    assert result.stdout.split() == ["64", "True", "True"]


async def _never_answers(scope: Any, receive: Any, send: Any) -> None:
    await asyncio.Event().wait()  # an app stuck before accepting or refusing the socket


UPGRADE = (
    b"GET /socket/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.mark.parametrize("parser", ["h11", "httptools"])
def test_a_websocket_handshake_the_app_does_not_answer_by_the_deadline_is_closed(
    parser: str,
) -> None:
    connections = guard(request_timeout=0.05)
    http_protocol, _ = protocols(connections, parser)

    async def scenario() -> FakeTransport:
        from uvicorn.server import ServerState

        config = uvicorn.Config(
            _never_answers, log_config=None, ws=protocols(connections, parser)[1]
        )
        transport = FakeTransport()
        protocol = http_protocol(config=config, server_state=ServerState(), app_state={})  # type: ignore[call-arg]
        transport.set_protocol(protocol)
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.data_received(UPGRADE)  # type: ignore[attr-defined]
        assert type(transport.protocol).__name__ == "GuardedWebSocketsSansIOProtocol"
        deadline = asyncio.get_running_loop().time() + 5
        while not transport.closed and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()
        return transport

    transport = asyncio.run(scenario())
    assert transport.closed
    assert connections.refused == {"request_timeout": 1}
