"""Structured logs of a real node: JSON lines, no secrets, context fields, request ids, levels."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from switchboard.client import Client, bearer_subprotocol
from switchboard.server.auth import issue_token
from tests.ops.helpers import bearer, http, node, node_within, unique
from tests.support.processes import ServerProcess

API_KEY = unique("logs-api-key-" + "k" * 16)
ADMIN_TOKEN = unique("logs-admin-token-" + "a" * 16)
ENV = {
    "SWITCHBOARD_API_KEY": API_KEY,
    "SWITCHBOARD_ADMIN_TOKEN": ADMIN_TOKEN,
    "SWITCHBOARD_SLOW_HANDLE_IN_MS": "100",
    "SWITCHBOARD_LIMITS": "off",
}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with node(ENV) as running:
        yield running


def _lines_with(server: ServerProcess, text: str) -> list[dict[str, object]]:
    return [entry for entry in list(server.logs) if text in json.dumps(entry)]


def _refused(url: str, **options: object) -> int:
    return Client.refusal(url, **options).status


def _forged(server: ServerProcess, user: str) -> str:
    """A well-formed token for ``user`` whose signature is wrong."""
    payload, _, _ = server.token(user).partition(".")
    _, _, signature = issue_token("not-the-node-secret", user).partition(".")
    return f"{payload}.{signature}"


def _crash(server: ServerProcess, user: str, topic: str) -> None:
    with ExitStack() as stack:
        client = stack.enter_context(Client.connect(server.socket_url(user)))
        client.joined(topic)
        client.push(topic, "crash")
        client.event(topic, "phx_error")
    server.wait_for_log(lambda e: e.get("topic") == topic and e.get("level") == "error")


# -- format --------------------------------------------------------------------------------------


def test_every_stderr_line_is_one_json_object_with_ts_level_logger_node_and_msg(
    server: ServerProcess,
) -> None:
    # Some of everything: a refused socket (info), a channel crash with a traceback (error),
    # a slow handler (warning) and an unhandled HTTP error (uvicorn's own line).
    _refused(f"{server.ws_url}?vsn=2.0.0")
    _crash(server, unique("format"), unique("test:format"))
    http("POST", f"{server.url}/test/actors/cache/stall?seconds=not-a-number")
    server.wait_for_log(lambda e: e.get("logger") == "uvicorn.error")

    assert len(server.logs) >= 4
    for entry in list(server.logs):
        assert isinstance(entry, dict) and entry.get("level") != "raw", f"not JSON: {entry}"
        for key in ("ts", "level", "logger", "node", "msg"):
            assert key in entry, f"{key} missing in {entry}"
        assert TIMESTAMP.match(str(entry["ts"])), entry
        assert entry["level"] in ("debug", "info", "warning", "error", "critical"), entry
        assert entry["node"] == server.node, entry
        assert isinstance(entry["msg"], str)


# -- secrets -------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["info", "debug"])
def test_a_socket_token_never_appears_in_the_logs_accepted_or_refused(level: str) -> None:
    with node({**ENV, "SWITCHBOARD_LOG_LEVEL": level}) as server:
        user = unique("tokenuser")
        good = server.token(user)
        forged = _forged(server, user)
        with ExitStack() as stack:  # accepted: token in the query string, then as subprotocol
            client = stack.enter_context(Client.connect(server.socket_url(user)))
            client.joined("room:tokens")
            client.reply(client.push("room:tokens", "ping", {"hello": "world"}))
            by_protocol = stack.enter_context(
                Client.connect(
                    f"{server.ws_url}?vsn=2.0.0",
                    subprotocols=["phoenix", bearer_subprotocol(good)],
                )
            )
            by_protocol.joined("room:tokens")
        # refused: a forged token in the query string, then as subprotocol, then a bad vsn
        assert _refused(f"{server.ws_url}?token={forged}&vsn=2.0.0") == 403
        assert (
            _refused(
                f"{server.ws_url}?vsn=2.0.0",
                subprotocols=["phoenix", bearer_subprotocol(forged)],
            )
            == 403
        )
        assert _refused(f"{server.ws_url}?token={good}&vsn=9.9.9") == 403
        # an HTTP request with the token in its query string (404 and 401)
        http("GET", f"{server.url}/no/such/page?token={good}&api_key={API_KEY}")
        http("GET", f"{server.url}/api/presence/room:tokens?token={good}")
        server.wait_for_log(lambda e: "9.9.9" in str(e.get("msg")))  # the last refusal

        for text in (good, forged, good.partition(".")[2], forged.partition(".")[2]):
            assert _lines_with(server, text) == [], f"{text!r} leaked"
        assert _lines_with(server, bearer_subprotocol(good).rsplit(".", 1)[1]) == []
        assert _lines_with(server, API_KEY) == []


def test_the_secrets_never_appear_in_logs_or_in_http_error_bodies(server: ServerProcess) -> None:
    hidden = (server.secret, API_KEY, ADMIN_TOKEN)
    url = server.url
    responses = [
        http("POST", f"{url}/api/broadcast", content=b"{"),
        http("POST", f"{url}/api/broadcast", headers=bearer("wrong"), json={}),
        http("POST", f"{url}/api/broadcast", headers=bearer(server.secret), json={}),
        http("POST", f"{url}/api/broadcast", headers=bearer(API_KEY), content=b"{nope"),
        http("POST", f"{url}/api/broadcast", headers=bearer(API_KEY), json={"topic": 1}),
        http("PUT", f"{url}/api/cache/k", headers=bearer(API_KEY), content=b"[1,"),
        http("PUT", f"{url}/api/cache/k", headers=bearer(API_KEY), json={"ttl": "x"}),
        http("GET", f"{url}/api/cache/missing", headers=bearer(API_KEY)),
        http("GET", f"{url}/api/presence/room:x", headers=bearer(ADMIN_TOKEN)),
        http("POST", f"{url}/api/admin/socket-token", headers=bearer(API_KEY)),
        http("GET", f"{url}/api/admin/socket-token", headers=bearer(ADMIN_TOKEN)),
        http("POST", f"{url}/test/actors/nobody/fault"),
        http("POST", f"{url}/test/actors/cache/stall?seconds=not-a-number"),
        http("GET", f"{url}/no/such/page?secret={server.secret}"),
    ]
    for response in responses:
        assert response.status_code >= 400, (response.request.url, response.status_code)
        for text in hidden:
            assert text not in response.text, (response.request.url, response.text)
            assert text not in str(response.headers), response.request.url
    user = unique("secrets")
    assert _refused(f"{server.ws_url}?token={_forged(server, user)}&vsn=2.0.0") == 403
    server.wait_for_log(lambda e: "refused socket" in str(e.get("msg")))
    for text in hidden:
        assert _lines_with(server, text) == []


# -- context -------------------------------------------------------------------------------------


def test_a_channel_crash_is_logged_with_the_socket_id_and_the_topic(
    server: ServerProcess,
) -> None:
    user, topic = unique("crasher"), unique("test:crash")
    _crash(server, user, topic)
    entry = server.wait_for_log(lambda e: e.get("topic") == topic and e.get("level") == "error")
    assert entry["socket_id"] == f"users_socket:{user}", entry
    assert entry["logger"] == "switchboard.channel"
    assert "crashed on request" in str(entry.get("exc")), entry


def test_a_slow_handle_in_is_logged_as_a_warning_with_its_topic_and_event(
    server: ServerProcess,
) -> None:
    user, topic = unique("sleeper"), unique("test:slow")
    with ExitStack() as stack:
        client = stack.enter_context(Client.connect(server.socket_url(user)))
        client.joined(topic)
        assert client.reply(client.push(topic, "ping", {}))[4]["status"] == "ok"
        assert client.reply(client.push(topic, "sleep", {"ms": 300}))[4]["status"] == "ok"
    entry = server.wait_for_log(
        lambda e: e.get("topic") == topic and "slow handle_in" in str(e.get("msg"))
    )
    assert entry["level"] == "warning", entry
    assert entry["event"] == "sleep", entry
    assert float(entry["duration_ms"]) >= 290, entry  # type: ignore[arg-type]
    assert entry["socket_id"] == f"users_socket:{user}", entry
    slow = [e for e in server.logs if e.get("topic") == topic and "slow" in str(e.get("msg"))]
    assert [e["event"] for e in slow] == ["sleep"], "the quick ping was not reported"


# -- request ids ---------------------------------------------------------------------------------


def test_every_http_response_gets_its_own_x_request_id(server: ServerProcess) -> None:
    responses = [
        http("GET", f"{server.url}/health/live"),
        http("GET", f"{server.url}/health/live"),
        http("GET", f"{server.url}/no/such/page"),
        http("POST", f"{server.url}/api/broadcast"),
        http("GET", f"{server.url}/metrics"),
    ]
    ids = [response.headers.get_list("x-request-id") for response in responses]
    for found in ids:
        assert len(found) == 1 and GENERATED_ID.match(found[0]), ids
    assert len({found[0] for found in ids}) == len(ids), "ids are unique"


@pytest.mark.parametrize(
    "given", ["abc-123-DEF", "a" * 64, "3f2a9c1e-7b4d-4e8a-9c2f-1d3e5f7a9b0c", "0"]
)
def test_a_sane_incoming_x_request_id_is_echoed(server: ServerProcess, given: str) -> None:
    response = http("GET", f"{server.url}/health/live", headers={"X-Request-Id": given})
    assert response.headers.get_list("x-request-id") == [given]


@pytest.mark.parametrize(
    "given",
    [
        pytest.param(b"a" * 65, id="too long"),
        pytest.param(b"a b", id="space"),
        pytest.param(b"<script>alert(1)</script>", id="markup"),
        pytest.param(b"id;rm -rf", id="punctuation"),
        pytest.param(b'"quoted"', id="quotes"),
        pytest.param(b"-", id="only a dash"),
        pytest.param(b"caf\xe9", id="latin-1 letter"),
        pytest.param(b"\xb2\xb3", id="latin-1 superscript digits"),
    ],
)
def test_an_insane_incoming_x_request_id_is_replaced(server: ServerProcess, given: bytes) -> None:
    response = http("GET", f"{server.url}/health/live", headers=[(b"X-Request-Id", given)])
    assert response.status_code == 200
    raw = [value for name, value in response.headers.raw if name.lower() == b"x-request-id"]
    assert len(raw) == 1, raw
    assert raw[0] != given
    assert GENERATED_ID.match(raw[0].decode("latin-1")), raw


def test_a_request_that_crashes_still_gets_a_request_id_in_its_response_and_log_line(
    server: ServerProcess,
) -> None:
    rid = unique("crashing-request")
    bad_number = f"not-a-number-{rid}"  # unique: other tests crash the same route
    response = http(
        "POST",
        f"{server.url}/test/actors/cache/stall?seconds={bad_number}",
        headers={"X-Request-Id": rid},
    )
    assert response.status_code == 500
    entry = server.wait_for_log(
        lambda e: e.get("level") == "error" and bad_number in str(e.get("exc"))
    )
    found = {"header": response.headers.get("x-request-id"), "log": entry.get("request_id")}
    assert found == {"header": rid, "log": rid}, entry


# -- levels --------------------------------------------------------------------------------------


def test_log_level_warning_suppresses_info_lines_but_keeps_warnings() -> None:
    # The harness learns the node's port from its "listening" line (see processes.py).
    with node_within({**ENV, "SWITCHBOARD_LOG_LEVEL": "warning"}, timeout=8) as server:
        topic = unique("test:quiet")
        assert _refused(f"{server.ws_url}?vsn=2.0.0") == 403  # logged at info
        with ExitStack() as stack:
            client = stack.enter_context(Client.connect(server.socket_url(unique("quiet"))))
            client.joined(topic)
            client.reply(client.push(topic, "sleep", {"ms": 300}))
        server.wait_for_log(lambda e: e.get("topic") == topic and e.get("level") == "warning")
        chatty = [e for e in server.logs if e.get("level") in ("debug", "info")]
        # The readiness line may stay whatever its level: supervisors and this harness need it.
        assert [e for e in chatty if e.get("event") != "listening"] == []
