"""Supervision of a real node's actors (cache, limiter, presence), seen from outside.

The test-profile hooks crash (``POST /test/actors/{name}/fault``) or stall
(``POST /test/actors/{name}/stall?seconds=S``) an actor; ``GET /test/actors`` reports restart
counts and health. Clients are ``switchboard.client.Client`` sockets.
Waiting on a restart means polling ``GET /test/actors`` against a deadline: an observable,
not a sleep.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from switchboard.client import Client
from tests.support.clients import open_client
from tests.support.nodes import actor_status, poll_actor_status, running_node, unique_user
from tests.support.processes import ServerProcess

WAIT = 5.0
RESTART_BUDGET = 1.0  # a crashed actor is back within this
QUICK = 0.2  # what "answered at once" means while an actor is stalled
ACTOR_TIMEOUT = 1.0
API_KEY = "supervision-test-api-key-" + uuid.uuid4().hex
BEARER = {"Authorization": f"Bearer {API_KEY}"}


def _node(env: dict[str, str]) -> contextlib.AbstractContextManager[ServerProcess]:
    return running_node({"SWITCHBOARD_API_KEY": API_KEY, **env})


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """Limits on (connects go through the limiter actor), short actor timeout."""
    with _node({"SWITCHBOARD_ACTOR_TIMEOUT": str(ACTOR_TIMEOUT)}) as node:
        yield node


def _state_of(wire: Client, topic: str) -> Any:
    return wire.event(topic, "presence_state")


# -- 1. a crashed actor is restarted and serves again --------------------------------------------


@pytest.mark.parametrize("name", ["cache", "limiter", "presence"])
def test_a_crashed_actor_is_restarted_within_a_second_and_serves_again(
    server: ServerProcess, name: str
) -> None:
    before = actor_status(server)
    assert before["healthy"], before
    old_lines = {id(entry) for entry in server.logs}

    response = httpx.post(f"{server.url}/test/actors/{name}/fault", timeout=WAIT)
    assert response.status_code == 200 and response.json() == {"sent": True}
    after = poll_actor_status(
        server,
        f"{name} restarted",
        lambda s: s["restarts"][name] == before["restarts"][name] + 1 and s["healthy"],
        RESTART_BUDGET,
    )
    others = {k: v for k, v in after["restarts"].items() if k != name}
    assert others == {k: v for k, v in before["restarts"].items() if k != name}, "one_for_one"
    line = server.wait_for_log(
        lambda e: (
            id(e) not in old_lines
            and name in str(e.get("msg"))
            and "restarted" in str(e.get("msg"))
        ),
        timeout=WAIT,
    )
    assert line["level"] in ("warning", "info"), line

    # Every actor serves again: the limiter admits a new socket, presence tracks and lists
    # its join, the cache answers (a lookup through the API counts in the new cache's stats).
    topic = f"room:after-{name}-{uuid.uuid4().hex[:6]}"
    user = unique_user(f"after-{name}")
    with ExitStack() as stack:
        wire = open_client(stack, server, user)
        wire.joined(topic)
        state = _state_of(wire, topic)
        assert list(state[4]) == [user], state
        wire.joined("test:x")
        listed = wire.reply(wire.push("test:x", "presence_list", {"topic": topic}))
        assert listed[4]["status"] == "ok" and list(listed[4]["response"]) == [user], listed
    missing = httpx.get(f"{server.url}/api/cache/absent-{topic}", headers=BEARER, timeout=WAIT)
    assert missing.status_code == 404, missing.text
    cache = actor_status(server)["cache"]
    assert "error" not in cache, cache
    if name == "cache":
        assert cache["misses"] >= 1, "the new cache actor answered the lookup"
    api = httpx.get(f"{server.url}/api/presence/{topic}", headers=BEARER, timeout=WAIT)
    assert api.status_code == 200, api.text  # went through the limiter too


# -- 2. a stalled actor does not block the loop ---------------------------------------------------


def test_a_stalled_presence_actor_blocks_nothing_but_what_needs_it(server: ServerProcess) -> None:
    stall = 4.0
    room = f"room:stall-{uuid.uuid4().hex[:6]}"
    other_room = f"room:stall-other-{uuid.uuid4().hex[:6]}"
    user = unique_user("staller")
    with ExitStack() as stack:
        wire = open_client(stack, server, user)
        wire.joined(room)
        _state_of(wire, room)
        wire.joined("test:x")

        response = httpx.post(
            f"{server.url}/test/actors/presence/stall", params={"seconds": stall}, timeout=WAIT
        )
        assert response.json() == {"sent": True}
        stalled_at = time.monotonic()

        started = time.monotonic()
        beat = wire.reply(wire.heartbeat(), timeout=QUICK)
        assert beat[4] == {"status": "ok", "response": {}}
        assert time.monotonic() - started < QUICK

        started = time.monotonic()
        pong = wire.reply(wire.push(room, "ping", {"n": 1}), timeout=QUICK)
        assert pong[4] == {"status": "ok", "response": {"n": 1}}
        assert time.monotonic() - started < QUICK

        started = time.monotonic()
        wire.joined(other_room, timeout=QUICK)
        assert time.monotonic() - started < QUICK, "a join reply does not wait for presence"

        started = time.monotonic()
        ref = wire.push("test:x", "presence_list", {"topic": room})
        timed_out = wire.reply(ref, timeout=ACTOR_TIMEOUT + 2)
        elapsed = time.monotonic() - started
        assert timed_out == [
            wire.join_refs["test:x"],
            ref,
            "test:x",
            "phx_reply",
            {"status": "error", "response": {"reason": "timeout"}},
        ]
        assert ACTOR_TIMEOUT * 0.8 <= elapsed < ACTOR_TIMEOUT + 1.0, elapsed

        api = httpx.get(f"{server.url}/api/presence/{room}", headers=BEARER, timeout=WAIT)
        assert api.status_code == 503, api.text
        assert "presence" in api.json()["error"], api.json()
        assert time.monotonic() - stalled_at < stall, "all of the above happened in the stall"

        # When the stall ends, the join on the other room gets its state (it was retried)
        # and presence answers again.
        state = _state_of(wire, other_room)
        assert list(state[4]) == [user], state
        listed = wire.reply(wire.push("test:x", "presence_list", {"topic": other_room}))
        assert listed[4]["status"] == "ok" and list(listed[4]["response"]) == [user], listed


# -- 3. the supervisor gives up ----------------------------------------------------------------


def test_the_supervisor_gives_up_after_too_many_restarts_and_readiness_says_so() -> None:
    with _node({}) as node:
        assert httpx.get(f"{node.url}/health/ready", timeout=WAIT).status_code == 200
        faults = 0
        status = actor_status(node)
        while status["healthy"]:
            assert faults < 10, f"still healthy after {faults} faults: {status}"
            restarts = status["restarts"]["presence"]
            response = httpx.post(f"{node.url}/test/actors/presence/fault", timeout=WAIT)
            assert response.json() == {"sent": True}, response.text
            faults += 1
            status = poll_actor_status(
                node,
                "restarted or given up",
                lambda s, n=restarts: not s["healthy"] or s["restarts"]["presence"] == n + 1,
                RESTART_BUDGET,
            )
        assert faults == 6, "max 5 restarts in 10 s: the 6th failure is one too many"
        assert status["gave_up"] and "presence" in status["gave_up"], status

        ready = httpx.get(f"{node.url}/health/ready", timeout=WAIT)
        assert ready.status_code == 503
        assert "actors" in ready.json()["reason"], ready.json()
        node.wait_for_log(lambda e: "supervisor gave up" in str(e.get("msg")), timeout=WAIT)
        assert httpx.get(f"{node.url}/health/live", timeout=WAIT).status_code == 200


# -- 4. shutting down ----------------------------------------------------------------------------


def _exit_code_after_sigterm(node: ServerProcess, budget: float) -> tuple[int | None, float]:
    started = time.monotonic()
    node.process.send_signal(signal.SIGTERM)
    try:
        code = node.process.wait(budget)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - started
    return code, time.monotonic() - started


def test_sigterm_stops_a_node_that_served_clients_with_exit_code_0() -> None:
    with _node({"SWITCHBOARD_DRAIN_PERIOD": "1"}) as node, ExitStack() as stack:
        topic = f"room:bye-{uuid.uuid4().hex[:6]}"
        wires = [open_client(stack, node, unique_user(f"bye{i}")) for i in range(3)]
        for wire in wires:
            wire.joined(topic)
            _state_of(wire, topic)
        httpx.post(f"{node.url}/test/actors/cache/fault", timeout=WAIT)  # a restarted actor too
        poll_actor_status(
            node, "cache restarted", lambda s: s["restarts"]["cache"] == 1, RESTART_BUDGET
        )
        code, elapsed = _exit_code_after_sigterm(node, budget=5.0)
        assert code == 0, f"exit code {code} after {elapsed:.1f}s (None: still running)"


def test_sigterm_stops_a_node_whose_supervisor_gave_up_with_exit_code_0() -> None:
    with _node({}) as node:
        for _ in range(10):
            status = actor_status(node)
            if not status["healthy"]:
                break
            restarts = status["restarts"]["limiter"]
            httpx.post(f"{node.url}/test/actors/limiter/fault", timeout=WAIT)
            poll_actor_status(
                node,
                "restarted or given up",
                lambda s, n=restarts: not s["healthy"] or s["restarts"]["limiter"] == n + 1,
                RESTART_BUDGET,
            )
        assert not actor_status(node)["healthy"]
        code, elapsed = _exit_code_after_sigterm(node, budget=5.0)
        assert code == 0, f"exit code {code} after {elapsed:.1f}s (None: still running)"


def test_sigterm_stops_a_node_whose_actor_is_stuck_within_a_few_seconds() -> None:
    """An actor stuck in a handler must not keep the process alive (pykka actor threads are
    not daemon threads): the node gives each actor 5 s to stop, so 8 s is generous."""
    with _node({"SWITCHBOARD_DRAIN_PERIOD": "1"}) as node:
        with ExitStack() as stack:
            wire = open_client(stack, node, unique_user("stuck"))
            wire.joined(f"room:stuck-{uuid.uuid4().hex[:6]}")
        response = httpx.post(
            f"{node.url}/test/actors/presence/stall", params={"seconds": 30}, timeout=WAIT
        )
        assert response.json() == {"sent": True}
        code, elapsed = _exit_code_after_sigterm(node, budget=8.0)
        if code is None:
            node.stop(signal.SIGKILL)
        assert code == 0, f"exit code {code} after {elapsed:.1f}s (None: still running)"
