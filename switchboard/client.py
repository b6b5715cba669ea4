"""A Phoenix Channels V2 client in Python: the one the tests, locust and the benchmark use.

One sans-I/O core and two thin faces on it, as websockets does it:

- :class:`Session` knows the protocol and does no I/O: one counter of refs per socket, the
  join_ref of every joined topic (pushes carry it unless told otherwise), frames encoded and
  decoded, and the frames received so far (``frames``, all of them; a backlog of those no
  wait has matched yet).
- :class:`Client` is blocking. It drives websockets' sans-I/O protocol over a plain socket
  and runs no thread of its own, so it also works under gevent (locust patches it in; the
  thread-based ``websockets.sync`` client aborted inside gevent's loop there), and a test can
  hold its socket (a small receive buffer, a source address, TCP_INFO).
- :class:`AsyncClient` is the asyncio face, on ``websockets.asyncio.client``.

Every wait is bounded and fails with the last frames seen. A wait takes the first matching
frame from the backlog, then reads more; frames that do not match stay for later waits.

Example::

    with Client.connect(f"ws://127.0.0.1:4000/socket/websocket?token={token}&vsn=2.0.0") as c:
        join_ref = c.joined("room:lobby")
        assert c.call("room:lobby", "ping", {"n": 1})[4] == {"status": "ok", "response": {"n": 1}}

Errors::

    ClientError
    ├── Refused      the upgrade was answered with another HTTP status (status, body, headers)
    ├── Closed       the connection ended while a frame was awaited (code, reason)
    ├── NoFrame      a bounded wait ran out; the message shows the last frames (an AssertionError)
    └── ReplyError   a reply's status was not "ok" (``joined``; locust's requests)
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as connect_async
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame as WireFrame
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Origin, Subprotocol
from websockets.uri import parse_uri

__all__ = [
    "TRACKED",
    "WAIT",
    "AsyncClient",
    "Client",
    "ClientError",
    "Closed",
    "Frame",
    "NoFrame",
    "Refused",
    "ReplyError",
    "Session",
    "bearer_subprotocol",
    "is_event",
    "is_reply",
]

WAIT = 5.0  # seconds a wait gives up after, unless told otherwise
MAX_SIZE = 16 * 2**20  # largest frame accepted from the server
SHOWN = 8  # frames a failed wait shows

Frame = list[Any] | bytes | str  # a decoded text frame, a binary frame, or text that is not JSON
T = TypeVar("T")


class _Tracked:
    def __repr__(self) -> str:
        return "TRACKED"


TRACKED: Any = _Tracked()  # "use the join_ref of the topic's current join"


class ClientError(Exception):
    """Root of this module's errors."""


class Refused(ClientError):
    """The server answered the WebSocket upgrade with ``status`` (403, 429, 503, ...)."""

    def __init__(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        super().__init__(f"upgrade refused: HTTP {status} {body[:200]!r}")
        self.status = status
        self.body = body
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)


class Closed(ClientError):
    """The connection ended; ``code`` is the close code received (1006: none)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class NoFrame(ClientError, AssertionError):
    """A bounded wait ended without the frame it waited for."""


class ReplyError(ClientError):
    """A push was answered with a status other than "ok" (``reply`` is the whole frame)."""

    def __init__(self, reply: Frame) -> None:
        super().__init__(f"error reply: {reply!r}")
        self.reply = reply


def bearer_subprotocol(token: str) -> str:
    """What phoenix.js 1.8 offers for ``authToken``: standard base64 without padding."""
    return "base64url.bearer.phx." + base64.b64encode(token.encode()).decode().rstrip("=")


def is_reply(ref: str) -> Callable[[Frame], bool]:
    return lambda f: isinstance(f, list) and f[3] == "phx_reply" and f[1] == ref


def is_event(topic: str, event: str) -> Callable[[Frame], bool]:
    return lambda f: isinstance(f, list) and f[2] == topic and f[3] == event


class Session:
    """One socket's side of the protocol, without I/O: refs, join_refs, frames seen.

    ``history=False`` keeps no history (``frames`` stays empty), for long-lived load clients.
    """

    def __init__(self, history: bool = True) -> None:
        self._ref = 0
        self.join_refs: dict[str, str] = {}
        self.frames: list[Frame] = []
        self._backlog: list[Frame] = []
        self._history = history

    # -- frames out ------------------------------------------------------------------------

    def next_ref(self) -> str:
        self._ref += 1
        return str(self._ref)

    def join_frame(self, topic: str, payload: Any = None) -> tuple[str, list[Any]]:
        """A ``phx_join`` whose join_ref is its own ref; later pushes to ``topic`` carry it."""
        ref = self.next_ref()
        self.join_refs[topic] = ref
        return ref, [ref, ref, topic, "phx_join", {} if payload is None else payload]

    def push_frame(
        self, topic: str, event: str, payload: Any = None, join_ref: Any = TRACKED
    ) -> tuple[str, list[Any]]:
        """A push with a fresh ref and the topic's join_ref (or ``join_ref``, even None)."""
        if event == "phx_join" and join_ref is TRACKED:
            return self.join_frame(topic, payload)
        ref = self.next_ref()
        if join_ref is TRACKED:
            join_ref = self.join_refs.get(topic)
        return ref, [join_ref, ref, topic, event, {} if payload is None else payload]

    def binary_push_frame(
        self, topic: str, event: str, data: bytes, join_ref: Any = TRACKED
    ) -> tuple[str, bytes]:
        """A kind-0 binary push (PROTOCOL.md §2): an ArrayBuffer payload."""
        ref = self.next_ref()
        if join_ref is TRACKED:
            join_ref = self.join_refs.get(topic)
        fields = [(join_ref or "").encode(), ref.encode(), topic.encode(), event.encode()]
        return ref, bytes((0, *map(len, fields))) + b"".join(fields) + data

    def heartbeat_frame(self) -> tuple[str, list[Any]]:
        ref = self.next_ref()
        return ref, [None, ref, "phoenix", "heartbeat", {}]

    @staticmethod
    def encode(frame: list[Any]) -> bytes:
        return orjson.dumps(frame)

    # -- frames in -------------------------------------------------------------------------

    @staticmethod
    def decode(data: str | bytes, text: bool) -> Frame:
        """A text frame as its JSON value (or the text itself if it is not JSON); a binary
        frame as bytes."""
        if not text:
            return data.encode() if isinstance(data, str) else bytes(data)
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            return data if isinstance(data, str) else bytes(data).decode(errors="replace")
        return value if isinstance(value, list) else orjson.dumps(value).decode()

    def seen(self, frame: Frame) -> Frame:
        """Note a frame read off the wire in ``frames`` (every one, matched or not)."""
        if self._history:
            self.frames.append(frame)
        return frame

    def keep(self, frame: Frame) -> None:
        """Put a frame no wait matched in the backlog, for later waits."""
        self._backlog.append(frame)

    def take(self, match: Callable[[Frame], bool]) -> Frame | None:
        """The first frame of the backlog that ``match`` accepts, removed from it."""
        for index, frame in enumerate(self._backlog):
            if match(frame):
                return self._backlog.pop(index)
        return None

    def kept(self) -> list[Frame]:
        """Frames received but not yet taken by a wait."""
        return list(self._backlog)

    def no_frame(self, what: str, timeout: float) -> NoFrame:
        last = (self.frames or self._backlog)[-SHOWN:]
        return NoFrame(f"no {what} within {timeout}s; last frames: {last!r}")


def _join_ok(reply: Frame) -> str:
    if not (isinstance(reply, list) and isinstance(reply[4], dict)):
        raise ReplyError(reply)
    if reply[4].get("status") != "ok":
        raise ReplyError(reply)
    return str(reply[0])


class _Assembler:
    """Whole messages out of websockets' frame events (fragments joined)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._text = True

    def feed(self, frame: WireFrame) -> tuple[bytes, bool] | None:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self._parts, self._text = [bytes(frame.data)], frame.opcode is Opcode.TEXT
        elif frame.opcode is Opcode.CONT and self._parts:
            self._parts.append(bytes(frame.data))
        else:
            return None  # ping, pong and close are the protocol object's business
        if not frame.fin:
            return None
        data, self._parts = b"".join(self._parts), []
        return data, self._text


class Client(Session):
    """A blocking Phoenix V2 client: websockets' sans-I/O protocol over a plain socket.

    One reader at a time; sends may come from other threads (or greenlets) while it reads.
    """

    def __init__(
        self, sock: socket.socket, protocol: ClientProtocol, early: list[Any], history: bool = True
    ) -> None:
        super().__init__(history)
        self.sock = sock
        self.protocol = protocol
        self._lock = threading.Lock()
        self._assembler = _Assembler()
        self._ready: list[Frame] = []
        self._queue(early)
        response = next((e for e in early if isinstance(e, Response)), None)
        protocols = response.headers.get_all("Sec-WebSocket-Protocol") if response else []
        self.subprotocol: str | None = protocols[0] if protocols else None

    # -- connecting ------------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        subprotocols: Sequence[str] | None = None,
        origin: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = WAIT,
        source_address: str | None = None,
        receive_buffer: int | None = None,
        history: bool = True,
    ) -> Client:
        """Open the socket and do the upgrade; :class:`Refused` if the server says no.

        ``source_address`` binds the local end (127.0.0.N: many clients for a proxy that
        hashes on the address); ``receive_buffer`` sets SO_RCVBUF before connecting.
        """
        uri = parse_uri(url)
        protocol = ClientProtocol(
            uri,
            origin=Origin(origin) if origin is not None else None,
            subprotocols=[Subprotocol(p) for p in subprotocols] if subprotocols else None,
            max_size=MAX_SIZE,
        )
        family, kind, proto, _, address = socket.getaddrinfo(
            uri.host, uri.port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            if receive_buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            if source_address is not None:
                sock.bind((source_address, 0))
            sock.settimeout(timeout)
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if uri.secure:
                context = ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=uri.host)
            request = protocol.connect()
            for name, value in (headers or {}).items():
                request.headers[name] = value
            protocol.send_request(request)
            _flush(sock, protocol)
            early: list[Any] = []
            while not any(isinstance(e, Response) for e in early):
                data = sock.recv(65536)
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
                early.extend(protocol.events_received())
                if not data:
                    break
        except BaseException:
            sock.close()
            raise
        if protocol.state is not State.OPEN:
            sock.close()
            response = next((e for e in early if isinstance(e, Response)), None)
            if response is not None and response.status_code != 101:
                raise Refused(response.status_code, bytes(response.body or b""), response.headers)
            raise ClientError(f"handshake failed: {protocol.handshake_exc!r}")
        sock.settimeout(None)
        return cls(sock, protocol, early, history)

    @classmethod
    def refusal(cls, url: str, **options: Any) -> Refused:
        """Connect expecting a refusal; return it (an AssertionError if accepted)."""
        try:
            client = cls.connect(url, **options)
        except Refused as refused:
            return refused
        client.close()
        raise AssertionError(f"{url} was accepted, expected a refusal")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- sending ---------------------------------------------------------------------------

    def send_raw(self, data: str | bytes, text: bool | None = None) -> None:
        """One WebSocket message as given: text for ``str`` (or ``text=True``), else binary.
        For tests that send what no well-behaved client would."""
        payload = data.encode() if isinstance(data, str) else data
        with self._lock:
            if self.protocol.state is not State.OPEN:
                raise Closed(self.close_code, "cannot send on a closed connection")
            if text or (text is None and isinstance(data, str)):
                self.protocol.send_text(payload)
            else:
                self.protocol.send_binary(payload)
            _flush(self.sock, self.protocol)

    def send(self, frame: list[Any]) -> None:
        self.send_raw(self.encode(frame), text=True)

    def push(self, topic: str, event: str, payload: Any = None, join_ref: Any = TRACKED) -> str:
        ref, frame = self.push_frame(topic, event, payload, join_ref)
        self.send(frame)
        return ref

    def push_binary(self, topic: str, event: str, data: bytes, join_ref: Any = TRACKED) -> str:
        ref, frame = self.binary_push_frame(topic, event, data, join_ref)
        self.send_raw(frame)
        return ref

    def join(self, topic: str, payload: Any = None) -> str:
        ref, frame = self.join_frame(topic, payload)
        self.send(frame)
        return ref

    def heartbeat(self) -> str:
        ref, frame = self.heartbeat_frame()
        self.send(frame)
        return ref

    # -- conversations ---------------------------------------------------------------------

    def joined(self, topic: str, payload: Any = None, timeout: float = WAIT) -> str:
        """Join and wait for an ok reply; returns the join_ref (:class:`ReplyError` if not ok)."""
        return _join_ok(self.reply(self.join(topic, payload), timeout))

    def call(
        self,
        topic: str,
        event: str,
        payload: Any = None,
        join_ref: Any = TRACKED,
        timeout: float = WAIT,
    ) -> list[Any]:
        """Push and wait for its reply frame, whatever its status."""
        return self.reply(self.push(topic, event, payload, join_ref), timeout)

    def reply(self, ref: str, timeout: float = WAIT) -> list[Any]:
        frame = self.expect(f"reply to ref {ref}", is_reply(ref), timeout)
        assert isinstance(frame, list)
        return frame

    def event(self, topic: str, event: str, timeout: float = WAIT) -> list[Any]:
        frame = self.expect(f"{event} on {topic}", is_event(topic, event), timeout)
        assert isinstance(frame, list)
        return frame

    # -- receiving -------------------------------------------------------------------------

    def expect(self, what: str, match: Callable[[Frame], bool], timeout: float = WAIT) -> Frame:
        """The first frame, kept or new, that ``match`` accepts; the others stay kept."""
        found = self.take(match)
        if found is not None:
            return found
        deadline = time.monotonic() + timeout
        while True:
            frame = self.seen(self._read(deadline, what, timeout))
            if match(frame):
                return frame
            self.keep(frame)

    def wait_until(self, what: str, condition: Callable[[], T], timeout: float = WAIT) -> T:
        """Read frames (kept, see ``frames``) until ``condition()`` is truthy; returns it."""
        deadline = time.monotonic() + timeout
        while not (value := condition()):
            self.keep(self.seen(self._read(deadline, what, timeout)))
        return value

    def recv(self, timeout: float = WAIT) -> Frame:
        """The next frame: the oldest kept one, else a new one."""
        return self.expect("any frame", lambda _frame: True, timeout)

    def receive(self, timeout: float | None = None) -> Frame | None:
        """The next frame off the wire, not kept anywhere; None after ``timeout`` seconds
        (None: wait for ever). For a reader loop of its own (locust's)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self._fill(remaining)
        return self._ready.pop(0)

    def closed(self, timeout: float = WAIT) -> int:
        """Read (and keep) frames until the server closes; returns the close code."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.keep(self.seen(self._read(deadline, "close from the server", timeout)))
        except Closed as closed:
            return closed.code

    @property
    def close_code(self) -> int:
        rcvd = self.protocol.close_rcvd
        return rcvd.code if rcvd is not None else 1006

    def close(self, code: int = 1000, wait: bool = True, timeout: float = 2.0) -> None:
        """Send a close frame; with ``wait``, read until the server's answer (bounded)."""
        with self._lock:
            if self.protocol.state is State.OPEN:
                self.protocol.send_close(code)
                try:
                    _flush(self.sock, self.protocol)
                except OSError:
                    pass
        if wait:
            deadline = time.monotonic() + timeout
            try:
                while self.protocol.state is not State.CLOSED and time.monotonic() < deadline:
                    self._fill(deadline - time.monotonic())
            except (OSError, Closed, TimeoutError):
                pass
        self.sock.close()

    # -- the wire --------------------------------------------------------------------------

    def _read(self, deadline: float, what: str, timeout: float) -> Frame:
        while not self._ready:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self.no_frame(what, timeout)
            self._fill(remaining)
        return self._ready.pop(0)

    def _fill(self, timeout: float | None) -> None:
        """Read once from the socket (at most ``timeout`` s) and queue what it completes."""
        if self.protocol.state is State.CLOSED or self.sock.fileno() < 0:
            raise Closed(self.close_code)
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        except OSError as exc:
            raise Closed(self.close_code, f"{type(exc).__name__}: {exc}") from exc
        with self._lock:
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            events = self.protocol.events_received()
            try:
                _flush(self.sock, self.protocol)  # pongs, and the answer to a close
            except OSError:
                pass
        self._queue(events)
        if not data and not self._ready:
            raise Closed(self.close_code)

    def _queue(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, WireFrame):
                message = self._assembler.feed(event)
                if message is not None:
                    self._ready.append(self.decode(*message))


def _flush(sock: socket.socket, protocol: ClientProtocol) -> None:
    for data in protocol.data_to_send():
        if data:
            sock.sendall(data)
        else:  # websockets asks for a half-close once the closing handshake is done
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass


class AsyncClient(Session):
    """The asyncio face: the same calls as :class:`Client`, awaited."""

    def __init__(self, connection: ClientConnection, history: bool = True) -> None:
        super().__init__(history)
        self.connection = connection

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        subprotocols: Sequence[str] | None = None,
        origin: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = WAIT,
        history: bool = True,
    ) -> AsyncClient:
        """Open and upgrade; :class:`Refused` if the server answers with another status."""
        try:
            connection = await connect_async(
                url,
                subprotocols=[Subprotocol(p) for p in subprotocols] if subprotocols else None,
                origin=Origin(origin) if origin is not None else None,
                additional_headers=Headers(headers or {}),
                open_timeout=timeout,
                close_timeout=2,
                proxy=None,
                compression=None,
                max_size=MAX_SIZE,
            )
        except InvalidStatus as exc:
            response = exc.response
            raise Refused(
                response.status_code, bytes(response.body or b""), response.headers
            ) from None
        return cls(connection, history)

    @classmethod
    async def refusal(cls, url: str, **options: Any) -> Refused:
        """Connect expecting a refusal; return it (an AssertionError if accepted)."""
        try:
            client = await cls.connect(url, **options)
        except Refused as refused:
            return refused
        await client.close()
        raise AssertionError(f"{url} was accepted, expected a refusal")

    @property
    def subprotocol(self) -> str | None:
        return self.connection.subprotocol

    @property
    def close_code(self) -> int:
        return self.connection.close_code or 1006

    # -- sending ---------------------------------------------------------------------------

    async def send_raw(self, data: str | bytes, text: bool | None = None) -> None:
        """One WebSocket message as given (see :meth:`Client.send_raw`)."""
        try:
            await self.connection.send(data, text=text)
        except ConnectionClosed as exc:
            raise Closed(self.close_code, "cannot send on a closed connection") from exc

    async def send(self, frame: list[Any]) -> None:
        await self.send_raw(self.encode(frame).decode())

    async def push(
        self, topic: str, event: str, payload: Any = None, join_ref: Any = TRACKED
    ) -> str:
        ref, frame = self.push_frame(topic, event, payload, join_ref)
        await self.send(frame)
        return ref

    async def push_binary(
        self, topic: str, event: str, data: bytes, join_ref: Any = TRACKED
    ) -> str:
        ref, frame = self.binary_push_frame(topic, event, data, join_ref)
        await self.send_raw(frame)
        return ref

    async def join(self, topic: str, payload: Any = None) -> str:
        ref, frame = self.join_frame(topic, payload)
        await self.send(frame)
        return ref

    async def heartbeat(self) -> str:
        ref, frame = self.heartbeat_frame()
        await self.send(frame)
        return ref

    # -- conversations ---------------------------------------------------------------------

    async def joined(self, topic: str, payload: Any = None, timeout: float = WAIT) -> str:
        """Join and wait for an ok reply; returns the join_ref (:class:`ReplyError` if not ok)."""
        return _join_ok(await self.reply(await self.join(topic, payload), timeout))

    async def call(
        self,
        topic: str,
        event: str,
        payload: Any = None,
        join_ref: Any = TRACKED,
        timeout: float = WAIT,
    ) -> list[Any]:
        """Push and wait for its reply frame, whatever its status."""
        return await self.reply(await self.push(topic, event, payload, join_ref), timeout)

    async def reply(self, ref: str, timeout: float = WAIT) -> list[Any]:
        frame = await self.expect(f"reply to ref {ref}", is_reply(ref), timeout)
        assert isinstance(frame, list)
        return frame

    async def event(self, topic: str, event: str, timeout: float = WAIT) -> list[Any]:
        frame = await self.expect(f"{event} on {topic}", is_event(topic, event), timeout)
        assert isinstance(frame, list)
        return frame

    # -- receiving -------------------------------------------------------------------------

    async def expect(
        self, what: str, match: Callable[[Frame], bool], timeout: float = WAIT
    ) -> Frame:
        """The first frame, kept or new, that ``match`` accepts; the others stay kept."""
        found = self.take(match)
        if found is not None:
            return found
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = self.seen(await self._read(deadline, what, timeout))
            if match(frame):
                return frame
            self.keep(frame)

    async def wait_until(self, what: str, condition: Callable[[], T], timeout: float = WAIT) -> T:
        """Read frames (kept, see ``frames``) until ``condition()`` is truthy; returns it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not (value := condition()):
            self.keep(self.seen(await self._read(deadline, what, timeout)))
        return value

    async def recv(self, timeout: float = WAIT) -> Frame:
        """The next frame: the oldest kept one, else a new one."""
        return await self.expect("any frame", lambda _frame: True, timeout)

    async def closed(self, timeout: float = WAIT) -> int:
        """Read (and keep) frames until the server closes; returns the close code."""
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                self.keep(self.seen(await self._read(deadline, "close from the server", timeout)))
        except Closed as closed:
            return closed.code

    async def close(self) -> None:
        await self.connection.close()

    async def _read(self, deadline: float, what: str, timeout: float) -> Frame:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise self.no_frame(what, timeout)
        try:
            data = await asyncio.wait_for(self.connection.recv(), remaining)
        except TimeoutError:
            raise self.no_frame(what, timeout) from None
        except ConnectionClosed as exc:
            raise Closed(self.close_code, str(exc)) from None
        return self.decode(data, isinstance(data, str))
