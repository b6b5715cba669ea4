"""Connections that never become requests: idle, slowloris, oversize heads, too many.

Each runs against a node under both HTTP parsers uvicorn offers, while a bystander pings.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.hostile.bystander import bystander
from tests.hostile.tcp import connections, request, settle, watch
from tests.support.nodes import running_node, unique_user
from tests.support.processes import ServerProcess

TIMEOUT = 1.5  # SWITCHBOARD_REQUEST_TIMEOUT
MAX_HEAD = 4096
PER_ADDRESS = 40
ATTACKERS = 30
API_KEY = "hostile-api-key-" + "k" * 16
#: How late a close may come on a busy machine, beyond the deadline.
SLACK = 3.0


def _env(parser: str, **extra: str) -> dict[str, str]:
    return {
        "SWITCHBOARD_HTTP_PARSER": parser,
        "SWITCHBOARD_REQUEST_TIMEOUT": str(TIMEOUT),
        "SWITCHBOARD_MAX_REQUEST_HEAD": str(MAX_HEAD),
        "SWITCHBOARD_MAX_CONNECTIONS_PER_IP": str(PER_ADDRESS),
        "SWITCHBOARD_CONNECT_RATE": "1000,1000",
        "SWITCHBOARD_API_KEY": API_KEY,
        **extra,
    }


@pytest.fixture(scope="module", params=["h11", "httptools"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    with running_node(_env(request.param)) as node:
        node.parser = request.param  # type: ignore[attr-defined]  # for the bystander's report
        yield node


def _closed_in_time(outcomes: list, what: str) -> None:  # type: ignore[type-arg]
    times = [o.closed_after for o in outcomes]
    assert all(t is not None for t in times), f"{what}: some still open: {times}"
    assert all(TIMEOUT - 0.2 <= t <= TIMEOUT + SLACK for t in times), f"{what}: closed at {times}"


def test_idle_connections_are_closed_at_the_request_timeout_and_the_bystander_is_served(
    server: ServerProcess,
) -> None:
    with bystander(server, "30 idle TCP connections"), connections(server, ATTACKERS) as socks:
        outcomes = watch(socks, TIMEOUT + SLACK + 1)
    _closed_in_time(outcomes, "idle connections")
    assert all(o.data == b"" for o in outcomes), "nothing was asked, nothing is answered"


def test_requests_sent_a_byte_at_a_time_get_408_at_the_request_timeout(
    server: ServerProcess,
) -> None:
    head = b"GET /health/live HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"z" * 100
    with (
        bystander(server, "30 slowloris requests, 5 bytes/s"),
        connections(server, ATTACKERS) as socks,
    ):
        outcomes = watch(socks, TIMEOUT + SLACK + 1, trickle=head)
    _closed_in_time(outcomes, "slowloris")
    assert {o.status for o in outcomes} == {408}


def test_a_body_sent_a_byte_at_a_time_gets_408_at_the_request_timeout(
    server: ServerProcess,
) -> None:
    head = (
        f"POST /api/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    with bystander(server, "10 bodies at 5 bytes/s"), connections(server, 10) as socks:
        for sock in socks:
            sock.send(head)
        outcomes = watch(socks, TIMEOUT + SLACK + 1, trickle=b'{"topic": "room:slow"' + b" " * 50)
    _closed_in_time(outcomes, "slow bodies")
    assert {o.status for o in outcomes} == {408}


@pytest.mark.parametrize("pieces", [1, 8], ids=["in one piece", "in eight pieces"])
def test_a_request_line_over_the_head_limit_gets_414_and_headers_over_it_get_431(
    server: ServerProcess, pieces: int
) -> None:
    long_line = b"GET /" + b"a" * MAX_HEAD + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    long_headers = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: y\r\n" * (MAX_HEAD // 10) + b"\r\n"
    for data, status in ((long_line, 414), (long_headers, 431)):
        outcome = request(server, data, pieces=pieces)
        assert outcome.status == status, outcome.data[:100]
        assert outcome.closed_after is not None and outcome.closed_after < SLACK
    just_fits = b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: "
    just_fits += b"p" * (MAX_HEAD - len(just_fits) - 4) + b"\r\n\r\n"
    assert len(just_fits) == MAX_HEAD
    assert request(server, just_fits, pieces=pieces).status == 200


def test_connections_over_the_per_address_cap_get_429_at_once_and_count_again_once_closed(
    server: ServerProcess,
) -> None:
    settle(server, 0)
    # The bystander holds one of the address's connections; a server accepts in order, so
    # the held ones are in before the ones over the cap.
    with bystander(server, f"{PER_ADDRESS} connections from one address") as figures:
        with connections(server, PER_ADDRESS - 1) as held:
            with connections(server, 5) as over:
                outcomes = watch(over, SLACK)
            assert {o.status for o in outcomes} == {429}, [o.data[:60] for o in outcomes]
            assert all(o.closed_after is not None and o.closed_after < SLACK for o in outcomes)
            assert all(b"retry-after: " in o.data for o in outcomes)
            assert len(held) == PER_ADDRESS - 1
        assert (
            request(
                server, b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            ).status
            == 200
        )
    assert figures.rtts


@pytest.fixture(scope="module")
def small() -> Iterator[ServerProcess]:
    """A node allowing 20 connections in all, and 3 per client behind a trusted proxy."""
    env = _env(
        "auto",
        SWITCHBOARD_MAX_CONNECTIONS="20",
        SWITCHBOARD_MAX_CONNECTIONS_PER_IP="3",
        SWITCHBOARD_TRUSTED_PROXIES="127.0.0.1",
    )
    with running_node(env) as node:
        yield node


def test_connections_over_the_total_cap_get_503_at_once(small: ServerProcess) -> None:
    # 127.0.0.1 is a trusted proxy here: its own connections are not capped per address.
    settle(small, 0)
    with bystander(small, "20 connections, the total cap"), connections(small, 19) as held:
        with connections(small, 5) as over:
            outcomes = watch(over, SLACK)
        assert {o.status for o in outcomes} == {503}, [o.data[:60] for o in outcomes]
        assert all(b"retry-after: " in o.data for o in outcomes)
        assert len(held) == 19


def test_websockets_through_a_trusted_proxy_are_capped_per_forwarded_address(
    small: ServerProcess,
) -> None:
    def open_as(address: str):  # type: ignore[no-untyped-def]
        return connect(
            small.socket_url(unique_user("proxied")),
            additional_headers={"X-Forwarded-For": address},
            open_timeout=5,
        )

    with open_as("10.0.0.1"), open_as("10.0.0.1"), open_as("10.0.0.1"):
        with pytest.raises(InvalidStatus) as refused:
            open_as("10.0.0.1")
        assert refused.value.response.status_code == 429
        with open_as("10.0.0.2"):
            pass
    with open_as("10.0.0.1"):
        pass  # the three closed: the address may connect again
