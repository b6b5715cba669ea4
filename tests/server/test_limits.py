"""Rate and connection limits of a real node, from outside.

Connects per client IP (HTTP 429 + Retry-After before the upgrade), sockets per user (403),
joins and pushes per socket (error reply ``{"reason": "rate_limited"}``, then close 1008 when
a socket keeps flooding), HTTP API calls per client IP (429 JSON), ``X-Forwarded-For`` only
from trusted proxies, and ``SWITCHBOARD_LIMITS=off``. Each test starts a node with the limits
it needs, so buckets never leak between tests.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from contextlib import ExitStack

import httpx

from switchboard.client import Client, Closed, Refused
from tests.support.clients import open_client
from tests.support.nodes import running_node, unique_user
from tests.support.processes import ServerProcess

WAIT = 5.0
API_KEY = "limits-test-api-key-" + uuid.uuid4().hex
BEARER = {"Authorization": f"Bearer {API_KEY}"}
RATE_LIMITED = {"status": "error", "response": {"reason": "rate_limited"}}


def _node(env: dict[str, str]) -> contextlib.AbstractContextManager[ServerProcess]:
    return running_node({"SWITCHBOARD_API_KEY": API_KEY, **env})


def _refused(server: ServerProcess, user: str, headers: dict[str, str] | None = None) -> Refused:
    """Connect, expecting a refusal before the upgrade; return it."""
    return Client.refusal(server.socket_url(user), headers=headers)


def _presence_api(server: ServerProcess, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(
        f"{server.url}/api/presence/room:x", headers={**BEARER, **(headers or {})}, timeout=WAIT
    )


# -- 1. connects per IP --------------------------------------------------------------------------


def test_the_fourth_quick_connect_from_one_ip_gets_429_with_retry_after() -> None:
    with _node({"SWITCHBOARD_CONNECT_RATE": "3,0.5"}) as node, ExitStack() as stack:
        for i in range(3):
            open_client(stack, node, unique_user(f"c{i}"))
        response = _refused(node, unique_user("c3"))
        assert response.status == 429
        retry_after = int(response.headers["Retry-After"])
        assert 1 <= retry_after <= 2, "one token at 0.5/s is at most 2 s away"
        # Refused before the token is even read: a different user is refused all the same.
        assert _refused(node, unique_user("other")).status == 429


# -- 2. sockets per user -----------------------------------------------------------------------


def test_a_user_at_the_socket_limit_gets_403_until_one_of_its_sockets_closes() -> None:
    env = {"SWITCHBOARD_USER_SOCKET_LIMIT": "2", "SWITCHBOARD_CONNECT_RATE": "1000,1000"}
    with _node(env) as node, ExitStack() as stack:
        user = unique_user("limited")
        first = open_client(stack, node, user)
        open_client(stack, node, user)
        response = _refused(node, user)
        assert response.status == 403
        assert response.body == b"", "phoenix.js expects an empty 403"
        open_client(stack, node, unique_user("someone-else"))  # another user is fine

        first.close()
        deadline = time.monotonic() + WAIT
        while True:  # the server processes the close asynchronously: poll-connect, bounded
            try:
                open_client(stack, node, user)
                break
            except Refused as exc:
                assert exc.status == 403, exc
                assert time.monotonic() < deadline, "the closed socket still counts"
                time.sleep(0.02)
        assert _refused(node, user).status == 403, "back at the limit"


# -- 3. pushes per socket ----------------------------------------------------------------------


def test_pushes_over_the_rate_get_rate_limited_and_a_flooding_socket_is_closed_1008() -> None:
    env = {"SWITCHBOARD_PUSH_RATE": "5,1", "SWITCHBOARD_FLOOD_DISCONNECT": "10"}
    topic = "room:flood"
    with _node(env) as node, ExitStack() as stack:
        flooder = open_client(stack, node, unique_user("flooder"))
        bystander = open_client(stack, node, unique_user("bystander"))
        flooder.joined(topic)
        bystander.joined(topic)
        join_ref = flooder.join_refs[topic]

        refs = [flooder.push(topic, "ping", {"n": n}) for n in range(5)]
        for ref in refs:
            assert flooder.reply(ref)[4]["status"] == "ok"
        ref = flooder.push(topic, "ping", {"n": 5})
        assert flooder.reply(ref) == [join_ref, ref, topic, "phx_reply", RATE_LIMITED]

        for n in range(6, 20):  # keep flooding: 10 rate-limited pushes in a row close it
            with contextlib.suppress(Closed):
                flooder.push(topic, "ping", {"n": n})
        assert flooder.closed() == 1008
        limited = [f for f in flooder.frames if f[3] == "phx_reply" and f[4] == RATE_LIMITED]
        assert len(limited) == 10, limited
        assert all(f[0] == join_ref for f in limited), "replies carry the channel's join_ref"

        # The bystander has its own bucket and its socket stays up.
        for n in range(5):
            assert bystander.reply(bystander.push(topic, "ping", {"n": n}))[4]["status"] == "ok"


# -- 4. joins per socket -----------------------------------------------------------------------


def test_the_third_quick_join_gets_rate_limited() -> None:
    with _node({"SWITCHBOARD_JOIN_RATE": "2,0.5"}) as node, ExitStack() as stack:
        wire = open_client(stack, node, unique_user("joiner"))
        wire.joined("room:j1")
        wire.joined("room:j2")
        ref = wire.join("room:j3")
        assert wire.reply(ref) == [ref, ref, "room:j3", "phx_reply", RATE_LIMITED]
        # The socket is not closed and a ping on a joined room is still answered.
        assert wire.reply(wire.push("room:j1", "ping", {}))[4]["status"] == "ok"
        # Another socket has its own bucket.
        open_client(stack, node, unique_user("other-joiner")).joined("room:j3")


# -- 5. HTTP API per IP ------------------------------------------------------------------------


def test_the_fourth_quick_api_call_gets_429_json_with_retry_after() -> None:
    with _node({"SWITCHBOARD_HTTP_RATE": "3,0.5"}) as node:
        for _ in range(3):
            assert _presence_api(node).status_code == 200
        response = _presence_api(node)
        assert response.status_code == 429
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert body["error"] == "rate_limited", body
        assert int(response.headers["Retry-After"]) == body["retry_after"]
        assert 1 <= body["retry_after"] <= 2, body
        # Outside /api/ and /dev/ nothing is limited.
        assert httpx.get(f"{node.url}/health/live", timeout=WAIT).status_code == 200


# -- 6. X-Forwarded-For ------------------------------------------------------------------------


def test_x_forwarded_for_from_an_untrusted_peer_does_not_escape_the_limits() -> None:
    env = {"SWITCHBOARD_HTTP_RATE": "3,0.5", "SWITCHBOARD_CONNECT_RATE": "2,0.5"}
    with _node(env) as node, ExitStack() as stack:
        for _ in range(3):
            assert _presence_api(node, {"X-Forwarded-For": "9.9.9.9"}).status_code == 200
        assert _presence_api(node, {"X-Forwarded-For": "8.8.8.8"}).status_code == 429
        assert _presence_api(node).status_code == 429, "all of it was counted for 127.0.0.1"

        for i in range(2):
            open_client(stack, node, unique_user(f"x{i}"), headers={"X-Forwarded-For": "9.9.9.9"})
        response = _refused(node, unique_user("x2"), {"X-Forwarded-For": "8.8.8.8"})
        assert response.status == 429


def test_x_forwarded_for_from_a_trusted_proxy_gives_each_client_its_own_bucket() -> None:
    env = {
        "SWITCHBOARD_HTTP_RATE": "3,0.5",
        "SWITCHBOARD_CONNECT_RATE": "2,0.5",
        "SWITCHBOARD_TRUSTED_PROXIES": "127.0.0.1",
    }
    with _node(env) as node, ExitStack() as stack:
        for _ in range(3):
            assert _presence_api(node, {"X-Forwarded-For": "9.9.9.9"}).status_code == 200
        assert _presence_api(node, {"X-Forwarded-For": "9.9.9.9"}).status_code == 429
        # A client cannot escape its bucket by prepending a made-up hop: the rightmost
        # address not a trusted proxy is the one that counts.
        spoofed = _presence_api(node, {"X-Forwarded-For": "6.6.6.6, 9.9.9.9"})
        assert spoofed.status_code == 429
        assert _presence_api(node, {"X-Forwarded-For": "8.8.8.8"}).status_code == 200
        assert _presence_api(node).status_code == 200, "the proxy's own bucket is untouched"

        for i in range(2):
            open_client(stack, node, unique_user(f"y{i}"), headers={"X-Forwarded-For": "9.9.9.9"})
        assert _refused(node, unique_user("y2"), {"X-Forwarded-For": "9.9.9.9"}).status == 429
        open_client(stack, node, unique_user("y3"), headers={"X-Forwarded-For": "8.8.8.8"})


# -- 7. limits off ------------------------------------------------------------------------------


def test_with_limits_off_none_of_the_limits_apply() -> None:
    env = {
        "SWITCHBOARD_LIMITS": "off",
        "SWITCHBOARD_CONNECT_RATE": "1,0.1",
        "SWITCHBOARD_USER_SOCKET_LIMIT": "1",
        "SWITCHBOARD_JOIN_RATE": "1,0.1",
        "SWITCHBOARD_PUSH_RATE": "1,0.1",
        "SWITCHBOARD_FLOOD_DISCONNECT": "2",
        "SWITCHBOARD_HTTP_RATE": "1,0.1",
    }
    with _node(env) as node, ExitStack() as stack:
        user = unique_user("unlimited")
        wires = [open_client(stack, node, user) for _ in range(4)]  # connect rate, per-user limit
        wire = wires[0]
        for n in range(3):
            wire.joined(f"room:free{n}")  # join rate
        refs = [wire.push("room:free0", "ping", {"n": n}) for n in range(20)]  # push rate, flood
        for ref in refs:
            assert wire.reply(ref)[4]["status"] == "ok"
        for _ in range(5):
            assert _presence_api(node).status_code == 200  # HTTP rate
