"""A bare synchronous Phoenix V2 client on websockets' sync API, for tests that talk to a
real node frame by frame (the async one for tests/server is tests/server/wire.py).

Every received frame is kept in ``Wire.frames``; every wait is bounded and fails the test
with the last frames seen.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support.processes import ServerProcess

WAIT = 5.0


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

    def join(self, topic: str, payload: Any = None) -> str:
        ref = self._next()
        self.join_refs[topic] = ref
        self.connection.send(json.dumps([ref, ref, topic, "phx_join", payload or {}]))
        return ref

    def push(self, topic: str, event: str, payload: Any = None) -> str:
        ref = self._next()
        join_ref = self.join_refs.get(topic)
        self.connection.send(json.dumps([join_ref, ref, topic, event, payload or {}]))
        return ref

    def heartbeat(self) -> str:
        ref = self._next()
        self.connection.send(json.dumps([None, ref, "phoenix", "heartbeat", {}]))
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

    def joined(self, topic: str, timeout: float = WAIT) -> Any:
        reply = self.reply(self.join(topic), timeout)
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


def open_wire(
    stack: ExitStack, server: ServerProcess, user: str, headers: dict[str, str] | None = None
) -> Wire:
    """A :class:`Wire` on a socket of ``user`` (closed when ``stack`` closes)."""
    connection = connect(server.socket_url(user), open_timeout=WAIT, additional_headers=headers)
    return Wire(stack.enter_context(connection))
