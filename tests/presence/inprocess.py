"""A Switchboard node running in the test's own process, its sockets fed frames directly.

The test decides how far the event loop runs between two operations, and looks at what
each socket would have written (``Recorder``) without a network in between.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from switchboard.server.codec import Frame
from switchboard.server.config import Settings
from switchboard.server.demo import DemoSocket
from switchboard.server.endpoint import Endpoint, router_for
from switchboard.server.node import Node
from switchboard.server.socket_server import SocketServer


class Recorder:
    """A connection that keeps every frame written to it, decoded."""

    try_write = None

    def __init__(self) -> None:
        self.frames: list[list[Any]] = []

    async def send(self, frame: Frame) -> None:
        self.frames.append(orjson.loads(frame))

    def close(
        self, code: int, reason: str, pending: asyncio.Task[None] | None
    ) -> asyncio.Task[None] | None:
        return None

    def reset(self) -> None:
        pass

    def presence(self, topic: str) -> list[list[Any]]:
        """The presence_state and presence_diff frames of ``topic``, in order."""
        events = ("presence_state", "presence_diff")
        return [f for f in self.frames if f[2] == topic and f[3] in events]


class InProcessNode:
    """A node on its own event loop; ``run`` drives the loop with a coroutine."""

    def __init__(self, **settings: Any) -> None:
        self.loop = asyncio.new_event_loop()
        settings = {"profile": "test", "limits": False, **settings}
        self.endpoint = Endpoint(DemoSocket, settings=Settings.from_env({}, **settings))
        self.node: Node = self.endpoint.node
        self._serials = itertools.count(1)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def socket(self, user: str) -> tuple[SocketServer, Recorder]:
        """A connected socket of ``user`` (the demo socket, as after its token was checked)."""
        handler = DemoSocket()
        handler.assigns["user_id"] = user
        recorder = Recorder()
        socket = SocketServer(
            self.node,
            router_for(DemoSocket, "test"),
            next(self._serials),
            handler,
            f"users_socket:{user}",
            recorder,
        )
        return socket, recorder

    async def until(self, what: str, done: Callable[[], bool], timeout: float = 5.0) -> None:
        """Let the loop run until ``done()`` (checked every turn), failing after ``timeout``."""
        deadline = self.loop.time() + timeout
        while not done():
            if self.loop.time() > deadline:
                raise AssertionError(f"not {what} within {timeout}s")
            await asyncio.sleep(0.005)


def send(socket: SocketServer, *frame: Any) -> None:
    socket.receive(json.dumps(list(frame)))


@contextmanager
def in_process_node(**settings: Any) -> Iterator[InProcessNode]:
    node = InProcessNode(**settings)
    node.run(node.node.start())
    try:
        yield node
    finally:
        node.run(node.node.stop())
        node.loop.close()
