"""Presence entries never outlive their socket, whatever order its operations come in.

A socket's presence operations reach the presence actor in the order the socket made them,
so an untrack (a leave, a duplicate join replacing the channel, a disconnect) can never
overtake the track it undoes. The property test runs a node in this process and feeds
frames to its sockets directly, so it decides how far the event loop runs between two
operations; the wire test sends the burst that used to leave ghosts behind.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect

from switchboard.server.socket_server import SocketServer
from tests.presence.inprocess import InProcessNode, in_process_node, send
from tests.support.clients import open_client
from tests.support.processes import ServerProcess, running_server

SETTLE = 2.0  # bound on the wait for presence to settle once every socket is gone
API_KEY = "ghost-test-api-key-" + uuid.uuid4().hex


# -- a node in this process ------------------------------------------------------------------


@pytest.fixture(scope="module")
def harness() -> Iterator[InProcessNode]:
    with in_process_node() as node:
        yield node


class Client:
    """One user's connection; after ``close`` the next operation reconnects."""

    def __init__(self, harness: InProcessNode, user: str, topic: str) -> None:
        self.harness, self.user, self.topic = harness, user, topic
        self.socket: SocketServer | None = None
        self.refs = itertools.count(1)
        self.join_ref: str | None = None

    def _send(self, *frame: Any) -> None:
        if self.socket is None:
            self.socket, _ = self.harness.socket(self.user)
        send(self.socket, *frame)

    def join(self) -> None:  # a second join of the topic replaces the channel (duplicate join)
        self.join_ref = ref = str(next(self.refs))
        self._send(ref, ref, self.topic, "phx_join", {})

    def leave(self) -> None:
        self._send(self.join_ref, str(next(self.refs)), self.topic, "phx_leave", {})

    def close(self) -> None:
        if self.socket is not None:
            self.socket.connection_lost()
        self.socket, self.join_ref = None, None


CLIENTS = 4  # two users with two sockets each
operations = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["join", "leave", "close"]), st.integers(0, CLIENTS - 1)),
        st.tuples(st.just("run"), st.integers(1, 6)),  # the loop runs this many rounds
        st.tuples(st.just("wait"), st.integers(1, 3)),  # ... and the actor gets time too
    ),
    max_size=30,
)


async def _play(harness: InProcessNode, topic: str, ops: list[tuple[str, int]]) -> dict[str, Any]:
    clients = [Client(harness, f"user{i % 2}", topic) for i in range(CLIENTS)]
    for op, arg in ops:
        if op == "run":
            for _ in range(arg):
                await asyncio.sleep(0)
        elif op == "wait":
            await asyncio.sleep(arg / 1000)
        else:
            getattr(clients[arg], op)()
    for client in clients:
        client.close()
    presence = harness.node.presence
    assert presence is not None
    deadline = time.monotonic() + SETTLE
    while True:  # an observable with a deadline: the leaves are under way
        await presence.settle(SETTLE)
        listed = await presence.list(topic)
        if not listed or time.monotonic() > deadline:
            return listed
        await asyncio.sleep(0.01)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(ops=operations)
def test_no_presence_remains_after_joins_leaves_duplicate_joins_and_closes_in_any_order(
    harness: InProcessNode, ops: list[tuple[str, int]]
) -> None:
    topic = f"room:ghost-{uuid.uuid4().hex[:8]}"
    left = harness.run(_play(harness, topic, ops))
    assert left == {}, f"presence left behind after every socket closed: {left}"


# -- over the wire ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server({"SWITCHBOARD_LIMITS": "off", "SWITCHBOARD_API_KEY": API_KEY}) as node:
        yield node


async def _burst(ws: ClientConnection, topic: str, rounds: int) -> None:
    """Back-to-back joins, duplicate joins and leaves without waiting for any reply."""
    refs = itertools.count(1)
    for _ in range(rounds):
        join_ref = str(next(refs))
        await ws.send(json.dumps([join_ref, join_ref, topic, "phx_join", {}]))
        duplicate = str(next(refs))
        await ws.send(json.dumps([duplicate, duplicate, topic, "phx_join", {}]))
        await ws.send(json.dumps([duplicate, str(next(refs)), topic, "phx_leave", {}]))
        join_ref = str(next(refs))
        await ws.send(json.dumps([join_ref, join_ref, topic, "phx_join", {}]))


def _metas(server: ServerProcess, topic: str) -> dict[str, int]:
    response = httpx.get(
        f"{server.url}/api/presence/{topic}",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return {key: len(p["metas"]) for key, p in response.json()["presences"].items()}


def test_a_burst_of_joins_leaves_and_duplicate_joins_then_close_leaves_no_ghost_metas(
    server: ServerProcess,
) -> None:
    topic = f"room:burst-{uuid.uuid4().hex[:8]}"
    users = ["alice-" + uuid.uuid4().hex[:6], "bob-" + uuid.uuid4().hex[:6]]

    async def run() -> None:
        # Unbounded queues: the frames nobody reads must not hold up the close handshake.
        sockets = [
            await connect(server.socket_url(user), max_queue=None)
            for user in users
            for _ in range(5)
        ]
        await asyncio.gather(*(_burst(ws, topic, rounds=20) for ws in sockets))
        for ws in sockets:
            await ws.close()

    asyncio.run(run())
    deadline = time.monotonic() + SETTLE
    while (left := _metas(server, topic)) and time.monotonic() < deadline:
        time.sleep(0.02)  # polling an observable with a deadline
    assert left == {}, f"ghost metas after every socket closed: {left}"

    with ExitStack() as stack:  # and a newcomer is told only about itself
        newcomer = "carol-" + uuid.uuid4().hex[:6]
        wire = open_client(stack, server, newcomer)
        wire.join(topic)
        state = wire.expect("presence_state", lambda f: f[3] == "presence_state")
        assert set(state[4]) <= {newcomer}, f"the newcomer was told about ghosts: {state[4]}"
        if not state[4]:  # a state from before its own join: its diff follows
            diff = wire.expect("own join", lambda f: f[3] == "presence_diff")
            assert list(diff[4]["joins"]) == [newcomer] and diff[4]["leaves"] == {}
