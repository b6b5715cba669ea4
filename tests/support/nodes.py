"""Single Switchboard nodes for tests that start their own, unique user names, and the
actor status of a node (``GET /test/actors``) polled against a deadline."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from tests.support.processes import ServerProcess, running_server

WAIT = 5.0


@contextlib.contextmanager
def running_node(
    env: dict[str, str], preexec_fn: Callable[[], object] | None = None
) -> Iterator[ServerProcess]:
    """:func:`running_server`, and on exit wait until the node's stderr pipe is closed."""
    with running_server(env, preexec_fn=preexec_fn) as server:
        yield server
    # The log reader closes the node's stderr pipe once the output ends; wait for it so
    # that no unclosed file is left to warn (warnings are errors here).
    deadline = time.monotonic() + 5
    stderr = server.process.stderr
    while stderr is not None and not stderr.closed and time.monotonic() < deadline:
        time.sleep(0.01)


def unique_user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def actor_status(server: ServerProcess) -> dict[str, Any]:
    """``GET /test/actors``: restart counts, health, cache counters."""
    response = httpx.get(f"{server.url}/test/actors", timeout=WAIT)
    assert response.status_code == 200, response.text
    return dict(response.json())


def poll_actor_status(
    server: ServerProcess, what: str, done: Callable[[dict[str, Any]], bool], budget: float
) -> dict[str, Any]:
    """Poll :func:`actor_status` until ``done`` accepts it, failing after ``budget`` s."""
    deadline = time.monotonic() + budget
    while True:
        status = actor_status(server)
        if done(status):
            return status
        assert time.monotonic() < deadline, f"not {what} within {budget}s: {status}"
        time.sleep(0.02)
