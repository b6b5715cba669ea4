"""The console's HTTP API (``/api/console/*``) on one node, as a script would use it: the
admin token, connections with their facts, disconnecting, topics and one topic's traffic,
broadcasting, the hour of history, rate limits, and a log line for every action."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from switchboard.client import Client
from tests.ops.helpers import bearer, http, node, wait_until
from tests.support.clients import open_client
from tests.support.processes import ServerProcess

ADMIN_TOKEN = "console-api-" + os.urandom(8).hex()


@pytest.fixture(scope="module")
def console() -> Iterator[ServerProcess]:
    env = {
        "SWITCHBOARD_ADMIN_TOKEN": ADMIN_TOKEN,
        "SWITCHBOARD_HTTP_RATE": "1000,1000",
        "SWITCHBOARD_CONNECT_RATE": "1000,1000",
    }
    with node(env) as running:
        yield running


def call(server: ServerProcess, method: str, path: str, **options: Any) -> httpx.Response:
    return http(method, f"{server.url}/api/console/{path}", headers=bearer(ADMIN_TOKEN), **options)


def get(server: ServerProcess, path: str) -> Any:
    response = call(server, "GET", path)
    assert response.status_code == 200, response.text
    return response.json()


ROUTES = [
    ("GET", "cluster"),
    ("GET", "history"),
    ("GET", "connections"),
    ("POST", "disconnect"),
    ("GET", "topics"),
    ("GET", "topics/room:x"),
    ("POST", "broadcast"),
    ("POST", "nodes/node9/dismiss"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_console_call_needs_the_admin_token(
    console: ServerProcess, server: ServerProcess, method: str, path: str
) -> None:
    url = f"{console.url}/api/console/{path}"
    assert http(method, url).status_code == 401
    assert http(method, url, headers=bearer("not-the-token")).status_code == 401
    assert http(method, url, headers=bearer(ADMIN_TOKEN)).status_code != 401
    # A node with no admin token has no console at all.
    off = http(method, f"{server.url}/api/console/{path}", headers=bearer("anything"))
    assert off.status_code == 404 and "disabled" in off.json()["error"]


def test_the_connections_list_has_each_sockets_facts_and_searches_and_pages(
    console: ServerProcess,
) -> None:
    with ExitStack() as stack:
        ann = open_client(stack, console, "ann-facts")
        ann.joined("room:facts-a")
        ann.joined("room:facts-b")
        ann.reply(ann.push("room:facts-a", "ping", {"n": 1}))
        for _ in range(3):
            open_client(stack, console, "ben-facts").joined("room:facts-a")

        found = get(console, "connections?q=ann-facts")
        assert found["total"] == 1 and found["missing"] == []
        [facts] = found["connections"]
        assert facts["user"] == "ann-facts" and facts["socket_id"] == "users_socket:ann-facts"
        assert facts["address"] == "127.0.0.1" and facts["admin"] is False
        assert facts["channels"] == ["room:facts-a", "room:facts-b"]
        assert facts["messages_in"] == 3  # two joins and a ping
        assert facts["messages_out"] >= 3  # their replies (and presence frames)
        assert abs(facts["connected_at"] - time.time()) < 60
        assert facts["node"] == console.node.rsplit(":", 1)[0]

        by_topic = get(console, "connections?q=room:facts-a")
        assert by_topic["total"] == 4
        first = get(console, "connections?q=ben-facts&limit=2")
        rest = get(console, "connections?q=ben-facts&limit=2&offset=2")
        assert first["total"] == rest["total"] == 3
        assert len(first["connections"]) == 2 and len(rest["connections"]) == 1
        ids = {c["id"] for c in first["connections"] + rest["connections"]}
        assert len(ids) == 3, "pages overlap"
        assert call(console, "GET", "connections?limit=0").status_code == 422
        assert call(console, "GET", "connections?offset=x").status_code == 422


def _console_actions(server: ServerProcess) -> list[dict[str, object]]:
    return [e for e in server.logs if e.get("event") == "console_action"]


def test_disconnecting_a_connection_or_a_user_closes_exactly_those_sockets_and_is_logged(
    console: ServerProcess,
) -> None:
    with ExitStack() as stack:
        target, bystander = (open_client(stack, console, "cleo-cut") for _ in range(2))
        other = open_client(stack, console, "dan-stays")
        for wire in (target, bystander, other):
            wire.joined("room:cut")
        one = get(console, "connections?q=cleo-cut")["connections"][0]

        closed = call(console, "POST", "disconnect", json={"connection": one["id"]})
        assert closed.status_code == 200, closed.text
        assert [c["id"] for c in closed.json()["closed"]] == [one["id"]]
        remaining = get(console, "connections?q=cleo-cut")
        assert remaining["total"] == 1, "visible at once: the closed socket is gone"

        everyone = call(console, "POST", "disconnect", json={"user": "cleo-cut"})
        assert everyone.status_code == 200 and len(everyone.json()["closed"]) == 1
        assert _closed(target) and _closed(bystander)
        assert other.reply(other.heartbeat())[4]["status"] == "ok", "dan's socket stays"

        again = call(console, "POST", "disconnect", json={"user": "cleo-cut"})
        assert again.status_code == 404 and again.json()["closed"] == []
        for bad in ({}, {"user": 1}, {"user": "a", "connection": "b"}, ["user"]):
            assert call(console, "POST", "disconnect", json=bad).status_code == 422, bad

    line = wait_until(
        "the disconnect is logged",
        lambda: next(
            (e for e in _console_actions(console) if e.get("target") == {"user": "cleo-cut"}),
            None,
        ),
    )
    assert line["action"] == "disconnect" and line["client"] == "127.0.0.1" and line["closed"] == 1
    assert "request_id" in line
    events = [e["message"] for e in get(console, "cluster")["events"]]
    assert any("disconnected user cleo-cut: 1 socket(s) closed" in e for e in events), events


def _closed(wire: Client) -> bool:
    return wire.closed() == 1001


def test_topics_are_listed_with_counts_and_a_topic_shows_presences_and_recent_traffic(
    console: ServerProcess,
) -> None:
    with ExitStack() as stack:
        eve = open_client(stack, console, "eve-topic")
        fay = open_client(stack, console, "fay-topic")
        for wire in (eve, fay):
            wire.joined("room:watched")
        eve.joined("room:quiet")
        # Presence diffs go out once per window: let fay's reach eve before the tap opens.
        eve.expect(
            "fay's presence",
            lambda f: (
                f[2] == "room:watched"
                and (
                    (f[3] == "presence_state" and "fay-topic" in f[4])
                    or (f[3] == "presence_diff" and "fay-topic" in f[4]["joins"])
                )
            ),
        )

        listed = get(console, "topics?q=room:")
        rows = {t["topic"]: t for t in listed["topics"]}
        assert rows["room:watched"]["subscribers"] == 2
        wait_until(
            "presences counted",
            lambda: (
                {t["topic"]: t for t in get(console, "topics?q=room:watched")["topics"]}[
                    "room:watched"
                ]["presences"]
                == 2
            ),
        )

        opened = get(console, "topics/room:watched")
        assert set(opened["presences"]) == {"eve-topic", "fay-topic"}
        assert opened["subscribers"] == 2, "the console's own tap is not a subscriber"
        assert opened["recent"] == [] and opened["watching_since"] <= time.time()

        eve.push("room:watched", "shout", {"body": "<b>seen</b>"})
        sent = call(
            console,
            "POST",
            "broadcast",
            json={"topic": "room:watched", "event": "notice", "payload": {"n": 1}},
        )
        assert sent.status_code == 202, sent.text
        fay.expect("the console's broadcast", lambda f: f[3] == "notice" and f[4] == {"n": 1})
        recent = wait_until(
            "both in the recent traffic",
            lambda: (r := get(console, "topics/room:watched")["recent"]) and len(r) >= 2 and r,
        )
        assert [m["event"] for m in recent][-2:] == ["shout", "notice"]
        assert json.loads(recent[-2]["payload"]) == {"body": "<b>seen</b>", "user": "eve-topic"}
        assert get(console, "topics?q=room:watched")["topics"][0]["subscribers"] == 2

        reserved = call(
            console, "POST", "broadcast", json={"topic": "room:watched", "event": "phx_reply"}
        )
        assert reserved.status_code == 422 and reserved.json()["problems"]
        assert call(console, "POST", "broadcast", content=b"{nope").status_code == 400


def test_history_keeps_every_second_and_combines_points_by_step(console: ServerProcess) -> None:
    history = wait_until(
        "a few seconds of history",
        lambda: (h := get(console, "history?minutes=5&step=1")) and len(_only(h)["t"]) >= 3 and h,
    )
    assert history["step"] == 1 and "connections" in history["metrics"]
    series = _only(history)
    assert all(len(series[m]) == len(series["t"]) for m in history["metrics"])
    assert series["t"] == sorted(series["t"])
    coarse = _only(get(console, "history?minutes=60&step=60"))
    assert len(coarse["t"]) <= len(series["t"]) and all(t % 60 == 0 for t in coarse["t"][:-1])
    assert call(console, "GET", "history?minutes=61").status_code == 422


def _only(history: dict[str, Any]) -> dict[str, list[float]]:
    [series] = history["nodes"].values()
    return dict(series)


def test_dismissing_a_node_that_is_not_lost_says_so(console: ServerProcess) -> None:
    response = call(console, "POST", "nodes/nobody:1/dismiss")
    assert response.status_code == 404 and "no lost node" in response.json()["error"]


def test_console_calls_are_rate_limited_per_client_address() -> None:
    env = {"SWITCHBOARD_ADMIN_TOKEN": ADMIN_TOKEN, "SWITCHBOARD_HTTP_RATE": "3,0.1"}
    with node(env) as limited:
        answers = [call(limited, "GET", "cluster").status_code for _ in range(5)]
    assert answers[:3] == [200, 200, 200] and answers[3:] == [429, 429], answers
