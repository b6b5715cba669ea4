"""HTTP from outside: security headers, HSTS and origins in prod, and the backend API
(broadcast, presence, cache, admin socket tokens) with its errors and rate limit."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from switchboard.client import Client
from switchboard.server.security import CSP
from tests.ops.helpers import WAIT, bearer, http, node, unique
from tests.support.processes import ServerProcess

API_KEY = unique("http-api-key-" + "k" * 16)
ADMIN_TOKEN = unique("http-admin-token-" + "a" * 16)
MAX_FRAME = 4096
CACHE_MAX_VALUE = 2048
PROD_SECRET = os.urandom(20).hex()  # 40 characters
GOOD_ORIGIN = "http://ok.example"
EXPECTED_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    env = {
        "SWITCHBOARD_API_KEY": API_KEY,
        "SWITCHBOARD_ADMIN_TOKEN": ADMIN_TOKEN,
        "SWITCHBOARD_MAX_FRAME_SIZE": str(MAX_FRAME),
        "SWITCHBOARD_CACHE_MAX_VALUE": str(CACHE_MAX_VALUE),
        "SWITCHBOARD_HTTP_RATE": "1000,1000",
        "SWITCHBOARD_CONNECT_RATE": "1000,1000",
    }
    with node(env) as running:
        yield running


@pytest.fixture(scope="module")
def prod() -> Iterator[ServerProcess]:
    """A prod node: real secret, one allowed origin, no API key and no admin token."""
    env = {
        "SWITCHBOARD_PROFILE": "prod",
        "SWITCHBOARD_SECRET": PROD_SECRET,
        "SWITCHBOARD_ALLOWED_ORIGINS": GOOD_ORIGIN,
    }
    with node(env) as running:
        yield running


def _api(server: ServerProcess, method: str, path: str, **options: Any) -> Any:
    options.setdefault("headers", bearer(API_KEY))
    return http(method, f"{server.url}{path}", **options)


def _broadcast(server: ServerProcess, body: Any) -> Any:
    return _api(server, "POST", "/api/broadcast", content=json.dumps(body).encode())


def _assert_security_headers(response: Any) -> None:
    found = {name: response.headers.get(name) for name in EXPECTED_HEADERS}
    assert found == EXPECTED_HEADERS, (response.request.url, response.status_code)


# -- security headers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 200),
        ("GET", "/dashboard", 200),
        ("GET", "/static/app.js", 200),
        ("GET", "/health/live", 200),
        ("GET", "/health/ready", 200),
        ("GET", "/metrics", 200),
        ("GET", "/no/such/page", 404),
        ("GET", "/static/no-such-file.js", 404),
        ("POST", "/api/broadcast", 401),
        ("GET", "/api/broadcast", 405),
        ("HEAD", "/", 200),
    ],
)
def test_every_http_response_carries_the_security_headers_and_no_hsts_outside_prod(
    server: ServerProcess, method: str, path: str, status: int
) -> None:
    response = http(method, f"{server.url}{path}")
    assert response.status_code == status
    _assert_security_headers(response)
    assert "strict-transport-security" not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/no/such/page", 404, "not found"),
        ("GET", "/static/no-such-file.js", 404, "not found"),
        ("GET", "/api/no-such-call", 404, "not found"),
        ("GET", "/api/broadcast", 405, "method not allowed"),
        ("DELETE", "/health/live", 405, "method not allowed"),
    ],
)
def test_unknown_paths_and_methods_answer_json_errors(
    server: ServerProcess, method: str, path: str, status: int, error: str
) -> None:
    response = http(method, f"{server.url}{path}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": error, "path": path}
    if status == 405:
        assert "allow" in response.headers and method not in response.headers["allow"]


def test_a_500_response_carries_the_security_headers_too(server: ServerProcess) -> None:
    response = http("POST", f"{server.url}/test/actors/cache/stall?seconds=not-a-number")
    assert response.status_code == 500
    _assert_security_headers(response)


def test_the_prod_profile_sends_hsts_with_the_other_security_headers(
    prod: ServerProcess,
) -> None:
    for path in ("/", "/health/live", "/no/such/page", "/metrics"):
        response = http("GET", f"{prod.url}{path}")
        _assert_security_headers(response)
        assert response.headers["strict-transport-security"] == (
            "max-age=31536000; includeSubDomains"
        )


def test_a_prod_socket_refuses_a_foreign_origin_and_accepts_the_allowed_one(
    prod: ServerProcess,
) -> None:
    url = prod.socket_url(unique("origin"))
    for origin in ("http://evil.example", "http://ok.example.evil.example", "https://ok.example"):
        assert Client.refusal(url, origin=origin).status == 403, origin
    with ExitStack() as stack:
        client = stack.enter_context(Client.connect(url, origin=GOOD_ORIGIN))
        client.joined("room:prod")


def test_the_apis_are_404_on_a_node_without_keys(prod: ServerProcess) -> None:
    for method, path in [
        ("POST", "/api/broadcast"),
        ("GET", "/api/presence/room:x"),
        ("GET", "/api/cache/k"),
        ("POST", "/api/admin/socket-token"),
    ]:
        response = http(method, f"{prod.url}{path}", headers=bearer("anything"))
        assert response.status_code == 404, (path, response.text)
        assert "disabled" in response.json()["error"]


# -- broadcast API -------------------------------------------------------------------------------


def test_broadcast_without_a_key_is_401_with_www_authenticate(server: ServerProcess) -> None:
    response = http("POST", f"{server.url}/api/broadcast", json={"topic": "t", "event": "e"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "error" in response.json()


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong-key",
        f"Bearer {API_KEY}x",
        f"Basic {API_KEY}",
        f"Bearer {ADMIN_TOKEN}",
        "Bearer",
        API_KEY,
    ],
)
def test_broadcast_with_a_wrong_key_is_401(server: ServerProcess, authorization: str) -> None:
    response = http(
        "POST",
        f"{server.url}/api/broadcast",
        headers={"Authorization": authorization},
        json={"topic": "room:x", "event": "e", "payload": {}},
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_broadcast_with_a_body_that_is_not_json_is_400(server: ServerProcess) -> None:
    for body in (b"{", b"", b"topic=room:x", b"\xff\xfe"):
        response = _api(server, "POST", "/api/broadcast", content=body)
        assert response.status_code == 400, body
        assert "JSON" in response.json()["error"]


@pytest.mark.parametrize("body", [[], [1, 2], "room:x", 3, None, True])
def test_broadcast_with_a_body_that_is_not_an_object_is_422(
    server: ServerProcess, body: Any
) -> None:
    response = _broadcast(server, body)
    assert response.status_code == 422
    assert "object" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        pytest.param({}, ["topic", "event"], id="empty object"),
        pytest.param({"event": "e"}, ["topic"], id="no topic"),
        pytest.param({"topic": "room:x"}, ["event"], id="no event"),
        pytest.param({"topic": "", "event": "e"}, ["topic"], id="empty topic"),
        pytest.param({"topic": "r" * 256, "event": "e"}, ["topic"], id="topic over 255 bytes"),
        pytest.param({"topic": 5, "event": ["e"]}, ["topic", "event"], id="wrong types"),
        pytest.param({"topic": "room:x", "event": "phx_reply"}, ["reserved"], id="phx_reply"),
        pytest.param(
            {"topic": "room:x", "event": "presence_diff"}, ["reserved"], id="presence_diff"
        ),
        pytest.param({"topic": "room:x", "event": "phx_join"}, ["reserved"], id="phx_join"),
        pytest.param({"topic": "room:x", "event": "e", "payload": [1]}, ["payload"], id="list"),
        pytest.param({"topic": "room:x", "event": "e", "payload": "x"}, ["payload"], id="str"),
        pytest.param({"topic": "room:x", "event": "e", "payload": None}, ["payload"], id="null"),
    ],
)
def test_an_invalid_broadcast_is_422_with_a_list_of_problems(
    server: ServerProcess, body: dict[str, Any], named: list[str]
) -> None:
    response = _broadcast(server, body)
    assert response.status_code == 422
    problems = response.json()["problems"]
    assert isinstance(problems, list) and len(problems) == len(named), problems
    for word, problem in zip(named, problems, strict=True):
        assert isinstance(problem, str) and word in problem, problems


def test_a_broadcast_body_over_the_max_frame_size_is_413(server: ServerProcess) -> None:
    def body_of(size: int) -> bytes:
        head = json.dumps({"topic": "room:big", "event": "e", "payload": {"x": ""}})
        filler = "y" * (size - len(head))
        return head.replace('"x": ""', f'"x": "{filler}"').encode()

    assert len(body_of(MAX_FRAME)) == MAX_FRAME
    at_limit = _api(server, "POST", "/api/broadcast", content=body_of(MAX_FRAME))
    assert at_limit.status_code == 202, at_limit.text
    over = _api(server, "POST", "/api/broadcast", content=body_of(MAX_FRAME + 1))
    assert over.status_code == 413
    assert str(MAX_FRAME) in over.json()["error"]


def test_a_broadcast_announcing_a_body_over_the_limit_is_413_before_any_of_it_is_sent(
    server: ServerProcess,
) -> None:
    head = (
        "POST /api/broadcast HTTP/1.1\r\nHost: t\r\n"
        f"Authorization: Bearer {API_KEY}\r\nContent-Length: 300000000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
        sock.sendall(head.encode())
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413 "), answer


def test_a_nested_payload_too_deep_to_encode_is_422_json_and_names_the_payload(
    server: ServerProcess,
) -> None:
    payload = '{"a":' + "[" * 300 + "]" * 300 + "}"
    body = f'{{"topic": "room:deep", "event": "e", "payload": {payload}}}'
    response = _api(server, "POST", "/api/broadcast", content=body.encode())
    assert response.status_code == 422, response.text
    assert any("payload" in problem for problem in response.json()["problems"])


@pytest.mark.parametrize("topic", ["switchboard:presence", "switchboard:cache", "admin:dashboard"])
def test_the_api_refuses_the_topics_internal_to_the_nodes(
    server: ServerProcess, topic: str
) -> None:
    response = _broadcast(server, {"topic": topic, "event": "e", "payload": {}})
    assert response.status_code == 422, response.text
    assert any("internal" in problem for problem in response.json()["problems"])
    presence = _api(server, "GET", f"/api/presence/{topic}")
    assert presence.status_code == 422 and "internal" in presence.json()["error"]


def test_a_valid_broadcast_is_202_and_reaches_a_client_joined_to_the_topic(
    server: ServerProcess,
) -> None:
    topic = unique("room:api")
    with ExitStack() as stack:
        client = stack.enter_context(Client.connect(server.socket_url(unique("listener"))))
        client.joined(topic)
        payload = {"text": "hello from the backend", "n": 1, "nested": {"ok": True}}
        response = _broadcast(server, {"topic": topic, "event": "news", "payload": payload})
        assert response.status_code == 202
        assert response.json() == {"ok": True, "topic": topic, "event": "news"}
        news = client.event(topic, "news")
        assert news == [None, news[1], topic, "news", payload]

        response = _broadcast(server, {"topic": topic, "event": "bare"})
        assert response.status_code == 202
        bare = client.event(topic, "bare")
        assert bare == [None, bare[1], topic, "bare", {}]
        # room:* keeps history: API broadcasts get positions too, one after the other.
        first, second = news[1].rsplit(".", 1), bare[1].rsplit(".", 1)
        assert first[0] == second[0] and int(second[1]) == int(first[1]) + 1


# -- presence, cache -----------------------------------------------------------------------------


def test_the_presence_api_lists_a_joined_client_in_phoenix_format(server: ServerProcess) -> None:
    topic, user = unique("room:x"), unique("present")
    with ExitStack() as stack:
        client = stack.enter_context(Client.connect(server.socket_url(user)))
        client.joined(topic)
        client.event(topic, "presence_state")  # pushed once the join is tracked

        assert http("GET", f"{server.url}/api/presence/{topic}").status_code == 401
        response = _api(server, "GET", f"/api/presence/{topic}")
        assert response.status_code == 200
        body = response.json()
        assert body["topic"] == topic
        assert list(body["presences"]) == [user]
        metas = body["presences"][user]["metas"]
        assert len(metas) == 1
        assert isinstance(metas[0]["phx_ref"], str) and metas[0]["phx_ref"]
        online_at = metas[0]["online_at"]  # milliseconds, like Date.now()
        assert type(online_at) is int and abs(online_at - time.time() * 1000) < 60_000, metas

    empty = _api(server, "GET", f"/api/presence/{unique('room:nobody')}")
    assert empty.status_code == 200 and empty.json()["presences"] == {}


def test_the_cache_api_puts_gets_and_deletes_a_value(server: ServerProcess) -> None:
    key = unique("ops:cache")
    path = f"/api/cache/{key}"
    value = {"name": "ünïcode", "list": [1, 2.5, None, True]}
    assert http("GET", f"{server.url}{path}").status_code == 401

    put = _api(server, "PUT", path, json={"value": value, "ttl": 60})
    assert put.status_code == 201 and put.json() == {"key": key}
    got = _api(server, "GET", path)
    assert got.status_code == 200 and got.json() == {"key": key, "value": value}

    assert _api(server, "PUT", path, json={"value": "second", "ttl": None}).status_code == 201
    assert _api(server, "GET", path).json()["value"] == "second"

    assert _api(server, "DELETE", path).json() == {"removed": 1}
    missing = _api(server, "GET", path)
    assert missing.status_code == 404 and "error" in missing.json()
    assert _api(server, "DELETE", path).json() == {"removed": 0}


def test_the_cache_api_deletes_a_whole_prefix(server: ServerProcess) -> None:
    prefix = unique("ops:prefix")
    for name in ("a", "b"):
        put = _api(server, "PUT", f"/api/cache/{prefix}:{name}", json={"value": 1})
        assert put.status_code == 201
    assert _api(server, "DELETE", f"/api/cache/{prefix}:", params={"prefix": "1"}).json() == {
        "removed": 2
    }
    assert _api(server, "GET", f"/api/cache/{prefix}:a").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"value": 1, "ttl": 0}, id="ttl 0"),
        pytest.param({"value": 1, "ttl": -5}, id="negative ttl"),
        pytest.param({"value": 1, "ttl": "60"}, id="ttl as a string"),
        pytest.param({"value": 1, "ttl": [60]}, id="ttl as a list"),
        pytest.param({"value": 1, "ttl": True}, id="ttl true"),
        pytest.param({"ttl": 60}, id="no value"),
        pytest.param({"value": None}, id="null value"),
        pytest.param([1], id="not an object"),
    ],
)
def test_the_cache_api_rejects_a_bad_put_with_422(server: ServerProcess, body: Any) -> None:
    key = unique("ops:bad")
    response = _api(server, "PUT", f"/api/cache/{key}", json=body)
    assert response.status_code == 422, response.text
    assert "error" in response.json()
    assert _api(server, "GET", f"/api/cache/{key}").status_code == 404, "nothing was stored"


def test_the_cache_api_stores_a_value_up_to_its_limit_and_refuses_a_larger_one_with_413(
    server: ServerProcess,
) -> None:
    key = unique("ops:big")
    at_limit = "v" * (CACHE_MAX_VALUE - 2)  # two bytes of JSON quotes
    assert _api(server, "PUT", f"/api/cache/{key}", json={"value": at_limit}).status_code == 201
    over = _api(server, "PUT", f"/api/cache/{key}", json={"value": at_limit + "v"})
    assert over.status_code == 413 and str(CACHE_MAX_VALUE) in over.json()["error"]
    huge = _api(server, "PUT", f"/api/cache/{key}", json={"value": "v" * 1_000_000})
    assert huge.status_code == 413
    assert _api(server, "GET", f"/api/cache/{key}").json()["value"] == at_limit


def test_the_cache_api_refuses_a_value_too_deep_to_encode_with_422(server: ServerProcess) -> None:
    key = unique("ops:deep")
    body = '{"value": ' + "[" * 300 + "]" * 300 + "}"
    response = _api(server, "PUT", f"/api/cache/{key}", content=body.encode())
    assert response.status_code == 422 and "deep" in response.json()["error"]


def test_the_cache_api_rejects_a_put_that_is_not_json_with_400(server: ServerProcess) -> None:
    response = _api(server, "PUT", f"/api/cache/{unique('ops:bad')}", content=b"{value")
    assert response.status_code == 400


# -- admin socket token --------------------------------------------------------------------------


def test_an_admin_socket_token_needs_the_admin_bearer_and_joins_the_dashboard(
    server: ServerProcess,
) -> None:
    url = f"{server.url}/api/admin/socket-token"
    for headers in ({}, bearer("wrong"), bearer(API_KEY)):
        refused = http("POST", url, headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "token" not in refused.json()

    response = http("POST", url, headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 200
    token = response.json()["token"]
    with ExitStack() as stack:
        admin_url = f"ws://{server.host}:{server.port}/admin/socket/websocket"
        admin = stack.enter_context(Client.connect(f"{admin_url}?token={token}&vsn=2.0.0"))
        admin.joined("admin:dashboard")

        # The app's own socket does not route the dashboard; the admin socket takes no
        # user's token.
        user = stack.enter_context(Client.connect(server.socket_url(unique("not-admin"))))
        reply = user.call("admin:dashboard", "phx_join")
        assert reply[4] == {"status": "error", "response": {"reason": "unmatched topic"}}
        user_token = server.token(unique("not-admin"))
        assert Client.refusal(f"{admin_url}?token={user_token}&vsn=2.0.0").status == 403


# -- rate limit ----------------------------------------------------------------------------------


def test_the_api_is_rate_limited_per_client_ip() -> None:
    # The full story (Retry-After timing, proxies) is in tests/server/test_limits.py.
    with node({"SWITCHBOARD_API_KEY": API_KEY, "SWITCHBOARD_HTTP_RATE": "2,0.2"}) as limited:
        statuses = [_api(limited, "GET", "/api/presence/room:x").status_code for _ in range(2)]
        assert statuses == [200, 200]
        response = _api(limited, "GET", "/api/presence/room:x")
        assert response.status_code == 429
        assert response.json()["error"] == "rate_limited"
        assert int(response.headers["retry-after"]) >= 1
        _assert_security_headers(response)
        assert http("GET", f"{limited.url}/health/live").status_code == 200, "not /api/"
