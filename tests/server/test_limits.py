"""Rate and connection limits of a real node, from outside.

Connects per client IP (HTTP 429 + Retry-After before the upgrade), sockets per user (403),
joins and pushes per socket (error reply ``{"reason": "rate_limited"}``, then close 1008 when
a socket keeps flooding), HTTP API calls per client IP (429 JSON), ``X-Forwarded-For`` only
from trusted proxies, and ``SWITCHBOARD_LIMITS=off``. Each test starts a node with the limits
it needs, so buckets never leak between tests.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.support.processes import ServerProcess, running_server

WAIT = 5.0
API_KEY = "limits-test-api-key-" + uuid.uuid4().hex
BEARER = {"Authorization": f"Bearer {API_KEY}"}
RATE_LIMITED = {"status": "error", "response": {"reason": "rate_limited"}}


@contextlib.contextmanager
def _node(env: dict[str, str]) -> Iterator[ServerProcess]:
    with running_server({"SWITCHBOARD_API_KEY": API_KEY, **env}) as server:
        yield server
    # The log reader closes the node's stderr pipe once the output ends; wait for it so
    # that no unclosed file is left to warn (warnings are errors here).
    deadline = time.monotonic() + 5
    stderr = server.process.stderr
    while stderr is not None and not stderr.closed and time.monotonic() < deadline:
        time.sleep(0.01)


def _user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


class Wire:
    """A bare Phoenix V2 client on websockets' sync API: every received frame is kept."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.frames: list[list[Any]] = []
        self._ref = 0
        self.join_refs: dict[str, str] = {}

    def _next(self) -> str:
        self._ref += 1
        return str(self._ref)

    def join(self, topic: str) -> str:
        ref = self._next()
        self.join_refs[topic] = ref
        self.connection.send(json.dumps([ref, ref, topic, "phx_join", {}]))
        return ref

    def push(self, topic: str, event: str, payload: Any = None) -> str:
        ref = self._next()
        join_ref = self.join_refs.get(topic)
        self.connection.send(json.dumps([join_ref, ref, topic, event, payload or {}]))
        return ref

    def wait(self, what: str, match: Callable[[list[Any]], bool], timeout: float = WAIT) -> Any:
        for frame in self.frames:
            if match(frame):
                return frame
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no frame for {what} within {timeout}s; got {self.frames[-8:]}")
            try:
                frame = json.loads(self.connection.recv(timeout=remaining))
            except TimeoutError:
                continue
            self.frames.append(frame)
            if match(frame):
                return frame

    def reply(self, ref: str, timeout: float = WAIT) -> Any:
        return self.wait(
            f"reply to ref {ref}", lambda f: f[3] == "phx_reply" and f[1] == ref, timeout
        )

    def joined(self, topic: str) -> Any:
        reply = self.reply(self.join(topic))
        assert reply[4]["status"] == "ok", reply
        return reply

    def closed_with(self, timeout: float = WAIT) -> int | None:
        """Read until the server closes the connection; return its close code."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"the server did not close the socket within {timeout}s")
            try:
                self.frames.append(json.loads(self.connection.recv(timeout=remaining)))
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd is not None else None


def _open(
    stack: ExitStack, server: ServerProcess, user: str, headers: dict[str, str] | None = None
) -> Wire:
    connection = connect(server.socket_url(user), open_timeout=WAIT, additional_headers=headers)
    return Wire(stack.enter_context(connection))


def _refused(server: ServerProcess, user: str, headers: dict[str, str] | None = None) -> Any:
    """Connect, expecting a refusal before the upgrade; return the HTTP response."""
    with pytest.raises(InvalidStatus) as refused:
        with connect(server.socket_url(user), open_timeout=WAIT, additional_headers=headers):
            pass
    return refused.value.response


def _presence_api(server: ServerProcess, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(
        f"{server.url}/api/presence/room:x", headers={**BEARER, **(headers or {})}, timeout=WAIT
    )


# -- 1. connects per IP --------------------------------------------------------------------------


def test_the_fourth_quick_connect_from_one_ip_gets_429_with_retry_after() -> None:
    with _node({"SWITCHBOARD_CONNECT_RATE": "3,0.5"}) as node, ExitStack() as stack:
        for i in range(3):
            _open(stack, node, _user(f"c{i}"))
        response = _refused(node, _user("c3"))
        assert response.status_code == 429
        retry_after = int(response.headers["Retry-After"])
        assert 1 <= retry_after <= 2, "one token at 0.5/s is at most 2 s away"
        # Refused before the token is even read: a different user is refused all the same.
        assert _refused(node, _user("other")).status_code == 429


# -- 2. sockets per user -----------------------------------------------------------------------


def test_a_user_at_the_socket_limit_gets_403_until_one_of_its_sockets_closes() -> None:
    env = {"SWITCHBOARD_USER_SOCKET_LIMIT": "2", "SWITCHBOARD_CONNECT_RATE": "1000,1000"}
    with _node(env) as node, ExitStack() as stack:
        user = _user("limited")
        first = stack.enter_context(connect(node.socket_url(user), open_timeout=WAIT))
        _open(stack, node, user)
        response = _refused(node, user)
        assert response.status_code == 403
        assert response.body in (b"", None), "phoenix.js expects an empty 403"
        _open(stack, node, _user("someone-else"))  # another user is fine

        first.close()
        deadline = time.monotonic() + WAIT
        while True:  # the server processes the close asynchronously: poll-connect, bounded
            try:
                _open(stack, node, user)
                break
            except InvalidStatus as exc:
                assert exc.response.status_code == 403, exc.response
                assert time.monotonic() < deadline, "the closed socket still counts"
                time.sleep(0.02)
        assert _refused(node, user).status_code == 403, "back at the limit"


# -- 3. pushes per socket ----------------------------------------------------------------------


def test_pushes_over_the_rate_get_rate_limited_and_a_flooding_socket_is_closed_1008() -> None:
    env = {"SWITCHBOARD_PUSH_RATE": "5,1", "SWITCHBOARD_FLOOD_DISCONNECT": "10"}
    topic = "room:flood"
    with _node(env) as node, ExitStack() as stack:
        flooder = _open(stack, node, _user("flooder"))
        bystander = _open(stack, node, _user("bystander"))
        flooder.joined(topic)
        bystander.joined(topic)
        join_ref = flooder.join_refs[topic]

        refs = [flooder.push(topic, "ping", {"n": n}) for n in range(5)]
        for ref in refs:
            assert flooder.reply(ref)[4]["status"] == "ok"
        ref = flooder.push(topic, "ping", {"n": 5})
        assert flooder.reply(ref) == [join_ref, ref, topic, "phx_reply", RATE_LIMITED]

        for n in range(6, 20):  # keep flooding: 10 rate-limited pushes in a row close it
            with contextlib.suppress(ConnectionClosed):
                flooder.push(topic, "ping", {"n": n})
        assert flooder.closed_with() == 1008
        limited = [f for f in flooder.frames if f[3] == "phx_reply" and f[4] == RATE_LIMITED]
        assert len(limited) == 10, limited
        assert all(f[0] == join_ref for f in limited), "replies carry the channel's join_ref"

        # The bystander has its own bucket and its socket stays up.
        for n in range(5):
            assert bystander.reply(bystander.push(topic, "ping", {"n": n}))[4]["status"] == "ok"


# -- 4. joins per socket -----------------------------------------------------------------------


def test_the_third_quick_join_gets_rate_limited() -> None:
    with _node({"SWITCHBOARD_JOIN_RATE": "2,0.5"}) as node, ExitStack() as stack:
        wire = _open(stack, node, _user("joiner"))
        wire.joined("room:j1")
        wire.joined("room:j2")
        ref = wire.join("room:j3")
        assert wire.reply(ref) == [ref, ref, "room:j3", "phx_reply", RATE_LIMITED]
        # The socket is not closed and a ping on a joined room is still answered.
        assert wire.reply(wire.push("room:j1", "ping", {}))[4]["status"] == "ok"
        # Another socket has its own bucket.
        _open(stack, node, _user("other-joiner")).joined("room:j3")


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
            _open(stack, node, _user(f"x{i}"), {"X-Forwarded-For": "9.9.9.9"})
        response = _refused(node, _user("x2"), {"X-Forwarded-For": "8.8.8.8"})
        assert response.status_code == 429


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
            _open(stack, node, _user(f"y{i}"), {"X-Forwarded-For": "9.9.9.9"})
        assert _refused(node, _user("y2"), {"X-Forwarded-For": "9.9.9.9"}).status_code == 429
        _open(stack, node, _user("y3"), {"X-Forwarded-For": "8.8.8.8"})


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
        user = _user("unlimited")
        wires = [_open(stack, node, user) for _ in range(4)]  # connect rate, per-user limit
        wire = wires[0]
        for n in range(3):
            wire.joined(f"room:free{n}")  # join rate
        refs = [wire.push("room:free0", "ping", {"n": n}) for n in range(20)]  # push rate, flood
        for ref in refs:
            assert wire.reply(ref)[4]["status"] == "ok"
        for _ in range(5):
            assert _presence_api(node).status_code == 200  # HTTP rate
