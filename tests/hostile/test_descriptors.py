"""File descriptors: raised at start and reported; when nearly gone, new connections are
refused at once rather than left to fail in ``accept()``; when gone anyway, the failures are
logged once per interval, not once per attempt.

Each node runs with a low open-file limit set in the child (``preexec_fn``), so the attack
stays cheap: a hundred or two connections.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
from collections.abc import Callable

import httpx

from tests.hostile.bystander import bystander
from tests.hostile.tcp import connections, request, settle, watch
from tests.support.nodes import running_node

TIMEOUT = 2.0  # SWITCHBOARD_REQUEST_TIMEOUT: idle attackers are closed after it
HEALTH = b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
ENV = {
    "SWITCHBOARD_REQUEST_TIMEOUT": str(TIMEOUT),
    "SWITCHBOARD_LIMITS": "off",  # one address attacks here: only the descriptors limit it
}


def open_files(soft: int, hard: int | None = None) -> Callable[[], None]:
    def lower() -> None:
        current_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, current_hard if hard is None else hard))

    return lower


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_the_open_file_limit_is_raised_at_start_logged_and_reported_in_metrics() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with running_node(ENV, preexec_fn=open_files(256)) as server:
        line = server.wait_for_log(lambda e: e.get("event") == "limits")
        text = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert line["fd_limit"] == hard and f"was 256, hard limit {hard}" in str(line["msg"])
    assert metric(text, "process_max_fds") == hard
    batch = max(16, min(2048, hard // 8))  # accepted at once, before any can be refused
    assert (
        metric(text, "switchboard_tcp_connection_limit") == hard - max(32, hard // 10) - 2 * batch
    )


def test_with_descriptors_nearly_gone_new_connections_get_503_and_the_bystander_is_served() -> None:
    # 128 descriptors: 32 kept in reserve, 2 x 16 for connections accepted at once before
    # they can be refused: 64 connections. The rest of the attack is refused at once.
    with running_node(ENV, preexec_fn=open_files(128, 128)) as server:
        with bystander(server, "150 idle connections, 128 descriptors"):
            with connections(server, 150) as socks:
                outcomes = watch(socks, TIMEOUT + 4)  # the held ones close at the timeout
            refused = [o for o in outcomes if o.status == 503]
            timed_out = [o for o in outcomes if o.status is None]
            assert len(refused) + len(timed_out) == 150
            assert len(timed_out) == 63, "the cap (64) less the bystander's connection"
            assert all(o.closed_after is not None and o.closed_after < 2 for o in refused)
            settle(server, 1)  # the idle ones timed out: only the bystander's is left
            assert request(server, HEALTH).status == 200, "the node serves again"
        failures = [e for e in server.logs if "accept" in str(e.get("msg"))]
        assert not failures, failures[:3]


def test_a_burst_arriving_at_once_is_held_or_answered_503_never_dropped() -> None:
    # The node is stopped while 150 connections arrive, so they wait together; then it
    # accepts what waits in one go. Each must be held or refused with 503, none dropped.
    with running_node(ENV, preexec_fn=open_files(128, 128)) as server:
        socks = []
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            for _ in range(150):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", server.port))
                socks.append(sock)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        try:
            outcomes = watch(socks, TIMEOUT + 4)  # the held ones close at the timeout
        finally:
            for sock in socks:
                sock.close()
    dropped = [o for o in outcomes if o.status is None and (o.closed_after or 0) < TIMEOUT - 0.2]
    assert not dropped, f"{len(dropped)} of 150 connections closed without an answer"
    assert {o.status for o in outcomes} == {None, 503}, "held till the timeout, or refused"


def test_with_descriptors_gone_accept_failures_do_not_flood_the_log_and_the_node_recovers() -> None:
    # A cap set above what 64 descriptors allow: accept() itself fails. asyncio would log
    # each failure with a traceback, thousands a second; the guard logs one line per 10 s.
    # (uvloop's libuv drops the waiting connections instead and logs nothing.)
    env = {**ENV, "SWITCHBOARD_MAX_CONNECTIONS": "1000"}
    with running_node(env, preexec_fn=open_files(64, 64)) as server:
        accept_failed = lambda entry: entry.get("event") == "accept_errors"  # noqa: E731
        with bystander(server, "100 idle connections, 64 descriptors, no cap", accept_failed):
            with connections(server, 100) as socks:
                watch(socks, TIMEOUT + 2)
        settle(server, 0)  # every attacker gone, and the node accepts again
        assert request(server, HEALTH).status == 200
        lines = [e for e in server.logs if "accept" in str(e.get("msg"))]
        assert len(lines) <= 1, [str(e.get("msg"))[:80] for e in lines[:5]]
        assert all(e["level"] == "error" and "exc" not in e for e in lines)
