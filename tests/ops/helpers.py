"""Helpers for the operations suites: nodes that clean up after themselves, a small sync
Phoenix V2 client, and bounded waits (every wait gives up after a deadline, none sleeps blindly).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

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


class Client:
    """A bare Phoenix V2 client on websockets' sync API; frames not yet matched are kept."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.frames: list[list[Any]] = []
        self._ref = 0
        self.join_refs: dict[str, str] = {}

    @classmethod
    def open(cls, stack: contextlib.ExitStack, url: str, **options: Any) -> Client:
        options.setdefault("open_timeout", WAIT)
        options.setdefault("close_timeout", 2)
        return cls(stack.enter_context(connect(url, **options)))

    def _next(self) -> str:
        self._ref += 1
        return str(self._ref)

    def push(self, topic: str, event: str, payload: Any = None) -> str:
        ref = self._next()
        join_ref = self.join_refs.get(topic)
        self.connection.send(json.dumps([join_ref, ref, topic, event, payload or {}]))
        return ref

    def join(self, topic: str, payload: Any = None) -> list[Any]:
        """Join ``topic``; returns the reply frame, whatever its status."""
        ref = self._next()
        self.join_refs[topic] = ref
        self.connection.send(json.dumps([ref, ref, topic, "phx_join", payload or {}]))
        return self.reply(ref)

    def joined(self, topic: str) -> list[Any]:
        reply = self.join(topic)
        assert reply[4]["status"] == "ok", reply
        return reply

    def wait(self, what: str, match: Callable[[list[Any]], bool], timeout: float = WAIT) -> Any:
        for index, frame in enumerate(self.frames):
            if match(frame):
                return self.frames.pop(index)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no frame for {what} within {timeout}s; got {self.frames[-8:]}")
            try:
                frame = json.loads(self.connection.recv(timeout=remaining))
            except TimeoutError:
                continue
            if match(frame):
                return frame
            self.frames.append(frame)

    def reply(self, ref: str, timeout: float = WAIT) -> Any:
        return self.wait(
            f"reply to ref {ref}", lambda f: f[3] == "phx_reply" and f[1] == ref, timeout
        )

    def event(self, topic: str, event: str, timeout: float = WAIT) -> Any:
        return self.wait(f"{event} on {topic}", lambda f: f[2] == topic and f[3] == event, timeout)
