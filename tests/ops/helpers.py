"""Helpers for the operations suites: nodes that clean up after themselves, HTTP calls, and
bounded waits (every wait gives up after a deadline, none sleeps blindly). Sockets are
:class:`switchboard.client.Client`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.processes import ServerProcess, running_server, start_server

WAIT = 5.0


def _wait_for_stderr_closed(server: ServerProcess) -> None:
    """The log reader closes the node's stderr pipe once its output ends; wait for it so no
    unclosed file is left to warn (warnings are errors here)."""
    deadline = time.monotonic() + WAIT
    stderr = server.process.stderr
    while stderr is not None and not stderr.closed and time.monotonic() < deadline:
        time.sleep(0.01)


@contextlib.contextmanager
def node(env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """A ``switchboard serve`` in the test profile (``env`` on top), stopped on exit."""
    with running_server(env) as server:
        yield server
    _wait_for_stderr_closed(server)


@contextlib.contextmanager
def node_within(env: dict[str, str], timeout: float) -> Iterator[ServerProcess]:
    """Like :func:`node`, but give up waiting for the "listening" line after ``timeout``."""
    server = start_server(env, timeout=timeout)
    try:
        yield server
    finally:
        server.stop(signal.SIGTERM, timeout=5.0)
        _wait_for_stderr_closed(server)


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def wait_until(what: str, condition: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Re-check ``condition`` until it is truthy (returned) or ``timeout`` passes (fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not true within {timeout}s (last value {value!r})")
        time.sleep(0.02)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def http(method: str, url: str, **options: Any) -> httpx.Response:
    """One request to a loopback node (plain HTTP: no proxies from the environment, and no
    TLS context, whose set-up costs more than the request)."""
    with httpx.Client(verify=False, trust_env=False, timeout=WAIT) as client:
        return client.request(method, url, **options)
