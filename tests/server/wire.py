"""A minimal Phoenix V2 client over a real WebSocket, for the integration tests.

Every wait is bounded: :meth:`Peer.expect` reads frames until one matches (keeping the others
for later calls) and gives up after ``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

WAIT = 5.0

Frame = list[Any] | bytes
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run one test scenario on a fresh event loop, bounded as a whole."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def bearer_subprotocol(token: str) -> str:
    """What phoenix.js 1.8 offers for ``authToken``: standard base64 without padding."""
    return "base64url.bearer.phx." + base64.b64encode(token.encode()).decode().rstrip("=")


async def open_peer(url: str, **options: Any) -> Peer:
    options.setdefault("proxy", None)
    options.setdefault("compression", None)
    options.setdefault("open_timeout", WAIT)
    options.setdefault("close_timeout", 2)
    ws = await connect(url, **options)
    return Peer(ws)


async def refusal_status(url: str, **options: Any) -> tuple[int, bytes]:
    """Try to connect; return the HTTP status and body of the refusal (fails if accepted)."""
    try:
        peer = await open_peer(url, **options)
    except InvalidStatus as exc:
        return exc.response.status_code, exc.response.body or b""
    await peer.close()
    raise AssertionError(f"{url} was accepted, expected a refusal")


class Peer:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ref = 0
        self._backlog: list[Frame] = []

    # -- sending -----------------------------------------------------------------------

    def next_ref(self) -> str:
        self._ref += 1
        return str(self._ref)

    async def send(self, frame: list[Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def push(
        self, topic: str, event: str, payload: Any = None, join_ref: str | None = None
    ) -> str:
        ref = self.next_ref()
        await self.send([join_ref, ref, topic, event, {} if payload is None else payload])
        return ref

    async def push_binary(self, join_ref: str, topic: str, event: str, data: bytes) -> str:
        ref = self.next_ref()
        fields = [join_ref.encode(), ref.encode(), topic.encode(), event.encode()]
        await self.ws.send(bytes((0, *map(len, fields))) + b"".join(fields) + data)
        return ref

    # -- receiving ---------------------------------------------------------------------

    async def recv(self, timeout: float = WAIT) -> Frame:
        if self._backlog:
            return self._backlog.pop(0)
        return await self._read(timeout)

    async def _read(self, timeout: float) -> Frame:
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        return data if isinstance(data, bytes) else json.loads(data)

    async def expect(self, predicate: Callable[[Frame], bool], timeout: float = WAIT) -> Frame:
        """The first frame (kept or new) matching ``predicate``; others stay for later."""
        for index, frame in enumerate(self._backlog):
            if predicate(frame):
                return self._backlog.pop(index)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no matching frame within {timeout}s; kept {self._backlog}")
            frame = await self._read(remaining)
            if predicate(frame):
                return frame
            self._backlog.append(frame)

    async def reply_to(self, ref: str, timeout: float = WAIT) -> list[Any]:
        frame = await self.expect(
            lambda f: isinstance(f, list) and f[1] == ref and f[3] == "phx_reply", timeout
        )
        assert isinstance(frame, list)
        return frame

    async def event(self, topic: str, event: str, timeout: float = WAIT) -> list[Any]:
        frame = await self.expect(
            lambda f: isinstance(f, list) and f[2] == topic and f[3] == event, timeout
        )
        assert isinstance(frame, list)
        return frame

    def kept(self) -> list[Frame]:
        """Frames received but not yet matched by :meth:`expect`."""
        return list(self._backlog)

    # -- conversations -----------------------------------------------------------------

    async def join(self, topic: str, payload: Any = None) -> tuple[str, list[Any]]:
        """Join ``topic``; returns its join_ref and the reply frame (whatever its status)."""
        ref = self.next_ref()
        await self.send([ref, ref, topic, "phx_join", {} if payload is None else payload])
        return ref, await self.reply_to(ref)

    async def joined(self, topic: str, payload: Any = None) -> str:
        join_ref, reply = await self.join(topic, payload)
        assert reply[4]["status"] == "ok", reply
        return join_ref

    async def call(
        self, topic: str, event: str, payload: Any = None, join_ref: str | None = None
    ) -> list[Any]:
        ref = await self.push(topic, event, payload, join_ref)
        return await self.reply_to(ref)

    async def heartbeat(self, timeout: float = WAIT) -> list[Any]:
        ref = await self.push("phoenix", "heartbeat", {})
        return await self.reply_to(ref, timeout)

    async def closed(self, timeout: float = WAIT) -> int | None:
        """Read (and drop) frames until the server closes; returns the close code received."""

        async def drain() -> None:
            try:
                while True:
                    await self.ws.recv()
            except ConnectionClosed:
                pass

        await asyncio.wait_for(drain(), timeout)
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()


class StalledClient:
    """A client that completes the handshake, joins a topic, then never reads again.

    Its receive buffer is tiny, so the server's writes back up quickly (a slow consumer).
    Blocking socket calls, bounded by a timeout; used before the test's event loop starts.
    """

    def __init__(self, url: str, rcvbuf: int = 4096) -> None:
        self.protocol = ClientProtocol(parse_uri(url))
        host, port = self.protocol.uri.host, self.protocol.uri.port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(WAIT)
        self.sock.connect((host, port))
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        events = self._read_until(lambda e: isinstance(e, Response))
        response = events[-1]
        assert isinstance(response, Response) and response.status_code == 101, response

    def join(self, topic: str) -> list[Any]:
        self.protocol.send_text(json.dumps(["1", "1", topic, "phx_join", {}]).encode())
        self._flush()

        def is_reply(event: Any) -> bool:
            return getattr(event, "data", None) is not None and b'"phx_reply"' in event.data

        frame = self._read_until(is_reply)[-1]
        return json.loads(frame.data)

    def close(self) -> None:
        self.sock.close()

    def read_to_end(self, timeout: float = WAIT) -> tuple[list[Any], int | None]:
        """Read until the server's close frame: the text frames before it (decoded) and its
        code. Raises ``ConnectionResetError`` if the server resets the connection instead."""
        frames: list[Any] = []
        self.sock.settimeout(timeout)
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"EOF without a close frame after {len(frames)} frames")
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if event.opcode is Opcode.TEXT:
                    frames.append(json.loads(event.data))
            if self.protocol.close_rcvd is not None:
                self._flush()  # our close frame back, as a well-behaved client would
                return frames, self.protocol.close_rcvd.code

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def _read_until(self, predicate: Callable[[Any], bool]) -> list[Any]:
        seen: list[Any] = []
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the stalled client's connection early")
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                seen.append(event)
                if predicate(event):
                    return seen
