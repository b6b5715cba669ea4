"""Ask every node of the cluster a question and gather the answers, within a deadline.

What only each node knows (its sockets, its topics' subscribers) the console gathers this
way: a request goes out on ``switchboard:call`` through the pub/sub backend; each node runs
the named handler and publishes its answer on the asker's own reply topic. A node that
does not answer in time (frozen, overloaded, cut off) is named in ``missing`` instead of
holding the caller up; one whose handler raises answers ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from switchboard.server.codec import Frame
from switchboard.server.pubsub import PubSub

logger = logging.getLogger("switchboard.cluster_call")

CALL_TOPIC = "switchboard:call"
Handler = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass
class Answers:
    """Node id -> what its handler returned; the nodes that did not answer in time."""

    by_node: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


class ClusterCall:
    def __init__(self, pubsub: PubSub, node: str) -> None:
        self.pubsub = pubsub
        self.node = node
        self.reply_topic = f"{CALL_TOPIC}:{node}"
        self._handlers: dict[str, Handler] = {}
        self._waiting: dict[str, tuple[asyncio.Future[None], Answers, set[str]]] = {}
        self._ids = itertools.count(1)
        self._running: set[asyncio.Task[None]] = set()

    def handle(self, name: str, handler: Handler) -> None:
        """Answer requests called ``name`` with ``await handler(args)``."""
        self._handlers[name] = handler

    def start(self) -> None:
        self.pubsub.subscribe(CALL_TOPIC, _Inbox(self._request))
        self.pubsub.subscribe(self.reply_topic, _Inbox(self._answer))

    def stop(self) -> None:
        for task in self._running:
            task.cancel()
        for future, _, _ in self._waiting.values():
            future.cancel()

    async def ask(
        self, name: str, args: dict[str, Any], nodes: Iterable[str], timeout: float = 1.5
    ) -> Answers:
        """Ask ``nodes`` (ids; this one included if listed) and wait for them, at most
        ``timeout`` seconds."""
        answers = Answers()
        others = {node for node in nodes if node != self.node}
        if others:
            call_id = f"{self.node}/{next(self._ids)}"
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting[call_id] = (future, answers, set(others))
            body = {"id": call_id, "from": self.node, "to": sorted(others), "name": name}
            self.pubsub.broadcast_remote(
                CALL_TOPIC, "request", orjson.dumps({**body, "args": args}).decode()
            )
        if self.node in nodes or not others:
            answers.by_node[self.node] = await self._run(name, args)
        if others:
            try:
                await asyncio.wait_for(asyncio.shield(future), timeout)
            except TimeoutError:
                pass
            finally:
                self._waiting.pop(call_id, None)
            answers.missing = sorted(others - set(answers.by_node))
        return answers

    async def _run(self, name: str, args: dict[str, Any]) -> Any:
        handler = self._handlers.get(name)
        if handler is None:
            return {"error": f"no handler for {name!r} on this node"}
        try:
            return await handler(args)
        except Exception as exc:
            logger.exception("cluster call %s failed", name)
            return {"error": f"{type(exc).__name__}: {exc}"}

    def _request(self, body: dict[str, Any]) -> None:
        if self.node not in body.get("to", ()):
            return
        task = asyncio.get_running_loop().create_task(self._reply(body))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _reply(self, body: dict[str, Any]) -> None:
        result = await self._run(str(body["name"]), dict(body.get("args") or {}))
        answer = {"id": body["id"], "node": self.node, "result": result}
        self.pubsub.broadcast_remote(
            f"{CALL_TOPIC}:{body['from']}", "answer", orjson.dumps(answer).decode()
        )

    def _answer(self, body: dict[str, Any]) -> None:
        waiting = self._waiting.get(str(body.get("id")))
        if waiting is None:
            return  # too late: the caller has given up on it
        future, answers, expected = waiting
        node = str(body["node"])
        if node in expected:
            answers.by_node[node] = body.get("result")
            if expected <= set(answers.by_node) and not future.done():
                future.set_result(None)


class _Inbox:
    """A pub/sub subscriber that decodes JSON bodies for ``handle``."""

    __slots__ = ("handle",)

    def __init__(self, handle: Callable[[dict[str, Any]], None]) -> None:
        self.handle = handle

    def deliver(self, event: str, frame: Frame) -> None:
        try:
            body = orjson.loads(frame)
        except orjson.JSONDecodeError:
            logger.warning("ignoring a malformed cluster call message")
            return
        if isinstance(body, dict):
            self.handle(body)
