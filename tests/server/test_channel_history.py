"""A channel's join and pushes on a history topic, in process: one socket of a node whose
backend the test controls (reads that wait, refusals), frames collected as sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx

from switchboard.channels.channel import NOREPLY, Channel
from switchboard.channels.router import Router
from switchboard.server.config import Settings
from switchboard.server.demo import DemoSocket
from switchboard.server.endpoint import Endpoint, history_topics
from switchboard.server.node import Node
from switchboard.server.pubsub import Position, PubSub, Unavailable
from switchboard.server.pubsub.history import HistoryRead
from switchboard.server.pubsub.memory import MemoryBackend
from switchboard.server.socket_server import SocketServer

TOPIC = "room:lobby"


class Harness:
    """One node (memory backend, no actors) and sockets on it whose frames are recorded."""

    def __init__(self) -> None:
        self.backend = MemoryBackend()
        self.router = Router.of({**DemoSocket.channels, "muffled:*": Muffled})
        self.pubsub = PubSub(self.backend, "node", history=history_topics([self.router]))
        settings = Settings.from_env({}, profile="test", presence=False, limits=False)
        self.node = Node(settings, self.pubsub, "node")
        self._serials = 0

    async def start(self) -> None:
        await self.pubsub.start()

    def socket(self) -> tuple[SocketServer, list[Any]]:
        connection = Recording()
        self._serials += 1
        handler = DemoSocket()
        handler.assigns["user_id"] = f"user{self._serials}"
        server = SocketServer(
            self.node, self.router, self._serials, handler, f"u{self._serials}", connection
        )
        return server, connection.sent


class Muffled(Channel):
    """Keeps history, and intercepts its shouts: handle_out pushes them on in lower case."""

    history = True
    intercept = frozenset({"shout"})

    def handle_in(self, event: str, payload: Any) -> Any:
        self.broadcast("shout", payload)
        return NOREPLY

    def handle_out(self, event: str, payload: Any) -> Any:
        self.push(event, {"text": payload["text"].lower()})
        return NOREPLY


class Recording:
    """A connection that keeps every frame sent to it, decoded."""

    try_write = None

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, frame: str | bytes) -> None:
        self.sent.append(json.loads(frame) if isinstance(frame, str) else frame)

    def close(
        self, code: int, reason: str, pending: asyncio.Task[None] | None
    ) -> asyncio.Task[None] | None:
        return None

    def reset(self) -> None:
        pass


async def joined(harness: Harness) -> tuple[SocketServer, list[Any]]:
    """A socket joined to TOPIC (join_ref "1"), its join reply received."""
    socket, sent = harness.socket()
    socket.receive(frame("1", "1", TOPIC, "phx_join", {}))
    await until(lambda: len(sent) == 1)
    return socket, sent


def frame(*fields: Any) -> str:
    return json.dumps(list(fields))


async def until(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


def test_what_arrives_while_a_join_reads_the_history_follows_its_reply_and_replay() -> None:
    async def scenario() -> None:
        harness = Harness()
        await harness.start()
        alice, alice_sent = await joined(harness)
        for n in (1, 2, 3):
            alice.receive(frame("1", str(n + 1), TOPIC, "shout", {"n": n}))
        since = alice_sent[1][1]  # the position of shout 1

        gate = asyncio.Event()
        read = harness.backend.history

        async def slow_read(
            topic: str, since: Position | None, upto: int | None = None
        ) -> HistoryRead:
            await gate.wait()
            return await read(topic, since, upto)

        harness.backend.history = slow_read  # type: ignore[method-assign]
        bob, bob_sent = harness.socket()
        bob.receive(frame("7", "7", TOPIC, "phx_join", {"since": since}))
        await asyncio.sleep(0.01)
        alice.receive(frame("1", "9", TOPIC, "shout", {"n": 4}))  # lands while bob's join reads
        assert bob_sent == []
        gate.set()
        await until(lambda: len(bob_sent) == 4)
        reply, *shouts = bob_sent
        assert reply[3] == "phx_reply" and reply[4]["response"]["recovered"] is True
        assert [s[4]["n"] for s in shouts] == [2, 3, 4]
        assert shouts == alice_sent[2:]

    asyncio.run(scenario())


def test_a_push_whose_broadcast_cannot_be_kept_gets_an_error_reply_and_the_channel_lives() -> None:
    async def scenario() -> None:
        harness = Harness()
        await harness.start()
        alice, sent = await joined(harness)
        harness.backend.publish_history = lambda *args: False  # type: ignore[method-assign]
        alice.receive(frame("1", "2", TOPIC, "shout", {"n": 1}))
        assert sent[-1] == [
            "1",
            "2",
            TOPIC,
            "phx_reply",
            {"status": "error", "response": {"reason": "unavailable"}},
        ]
        alice.receive(frame("1", "3", TOPIC, "ping", {"still": "here"}))
        assert sent[-1][4] == {"status": "ok", "response": {"still": "here"}}

    asyncio.run(scenario())


def test_a_join_whose_history_cannot_be_read_is_refused_as_unavailable_and_leaves_no_trace() -> (
    None
):
    async def scenario() -> None:
        harness = Harness()
        await harness.start()

        async def down(*args: object) -> HistoryRead:
            raise Unavailable("Redis unavailable: test")

        harness.backend.history = down  # type: ignore[method-assign]
        alice, sent = await joined(harness)
        assert sent == [
            [
                "1",
                "1",
                TOPIC,
                "phx_reply",
                {"status": "error", "response": {"reason": "unavailable"}},
            ]
        ]
        assert TOPIC not in harness.pubsub.topics() and alice.channels == {}

    asyncio.run(scenario())


def test_a_channel_owed_broadcasts_that_are_lost_errors_so_its_client_rejoins() -> None:
    async def scenario() -> None:
        harness = Harness()
        await harness.start()
        alice, sent = await joined(harness)
        harness.pubsub.history_lost(TOPIC)
        assert sent[-1] == ["1", "1", TOPIC, "phx_error", {"reason": "channel_crash"}]
        assert harness.pubsub.subscriber_count(TOPIC) == 0
        alice.receive(
            frame("2", "2", TOPIC, "phx_join", {"since": sent[0][4]["response"]["position"]})
        )
        await until(lambda: sent[-1][3] == "phx_reply")
        assert sent[-1][4] == {
            "status": "ok",
            "response": {"position": sent[0][4]["response"]["position"], "recovered": True},
        }

    asyncio.run(scenario())


def test_an_api_broadcast_a_history_topic_cannot_keep_is_a_503_and_others_still_go_out() -> None:
    async def scenario() -> None:
        key = "api-key-for-this-test"
        settings = Settings.from_env({}, profile="test", api_key=key, presence=False)
        endpoint = Endpoint(DemoSocket, settings=settings)
        app = endpoint.app
        async with app.router.lifespan_context(app):
            endpoint.node.pubsub.backend.publish_history = lambda *args: False  # type: ignore[method-assign]
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:

                async def post(topic: str) -> httpx.Response:
                    body = {"topic": topic, "event": "news", "payload": {}}
                    auth = {"Authorization": f"Bearer {key}"}
                    return await client.post("/api/broadcast", json=body, headers=auth)

                refused = await post("room:full")
                assert refused.status_code == 503, refused.text
                assert (
                    refused.headers["retry-after"] == "1" and "room:full" in refused.json()["error"]
                )
                assert (await post("test:no-history")).status_code == 202

    asyncio.run(scenario())


def test_what_handle_out_pushes_for_an_intercepted_broadcast_carries_its_position() -> None:
    async def scenario() -> None:
        harness = Harness()
        await harness.start()
        alice, sent = harness.socket()
        alice.receive(frame("1", "1", "muffled:a", "phx_join", {}))
        await until(lambda: len(sent) == 1)
        start = sent[0][4]["response"]["position"]
        for n, text in enumerate(("HELLO", "THERE"), start=2):
            alice.receive(frame("1", str(n), "muffled:a", "shout", {"text": text}))
        await until(lambda: len(sent) == 3)
        pushed = sent[1:]
        assert [p[4] for p in pushed] == [{"text": "hello"}, {"text": "there"}]
        positions = [Position.parse(p[1]) for p in pushed]
        assert [p.offset for p in positions if p] == [1, 2]  # refs, not null
        assert all(p[0] == "1" for p in pushed)  # pushes: the join_ref is the channel's

        bob, bob_sent = harness.socket()
        bob.receive(frame("7", "7", "muffled:a", "phx_join", {"since": start}))
        await until(lambda: len(bob_sent) == 3)
        assert [(p[1], p[4]) for p in bob_sent[1:]] == [(p[1], p[4]) for p in pushed]

    asyncio.run(scenario())
