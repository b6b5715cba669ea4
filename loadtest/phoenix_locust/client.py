"""A small Phoenix Channels V2 client for gevent (locust): one WebSocket, replies by ref.

Why not ``websockets.sync.client``: it runs its own reader thread and a ``selectors`` poller
over a shutdown socketpair. Once locust has monkey-patched ``threading`` and ``select`` with
gevent, opening and closing a couple of hundred of those connections aborted the process
inside gevent's libev loop (``epoll_modify: Assertion ... invalid fd``). So this module
drives websockets' sans-I/O :class:`~websockets.client.ClientProtocol` (the RFC 6455 framing
and handshake, no threads, no I/O of its own) over a plain gevent socket: one reader greenlet
per connection, and one lock so that frames from different greenlets never interleave on the
wire. websockets is already a Switchboard dependency; nothing else is needed.

Frames are ``[join_ref, ref, topic, event, payload]`` JSON arrays (docs/PROTOCOL.md §2).
:meth:`PhoenixSocket.call` sends a push with a fresh ref and waits for the ``phx_reply``
carrying that ref; every other frame goes to the ``on_message`` callback, in the reader
greenlet.
"""

from __future__ import annotations

import itertools
import socket
import ssl
from collections.abc import Callable
from typing import Any

import gevent
import orjson
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

MessageHandler = Callable[[Any, str, str, Any], None]  # join_ref, topic, event, payload
CloseHandler = Callable[[BaseException | None], None]


class ConnectError(Exception):
    """The WebSocket could not be opened (refused handshake, network error, timeout)."""


class ConnectionLost(Exception):
    """The connection ended while a reply was awaited, or before a push could be sent."""


class ReplyTimeout(Exception):
    """No ``phx_reply`` for a push within the timeout."""


class ReplyError(Exception):
    """The server answered a push with a reply whose status is not ``ok``."""

    def __init__(self, status: str, response: Any) -> None:
        super().__init__(f"{status}: {response!r}")
        self.status = status
        self.response = response


class PhoenixSocket:
    """One Phoenix V2 WebSocket connection, usable from any greenlet.

    ``on_message(join_ref, topic, event, payload)`` gets every frame that is not the reply to
    a :meth:`call`; ``on_close(reason)`` is called once if the connection ends without
    :meth:`close` having been called. ``source_address`` binds the local end to that IP (with
    many loopback addresses, one machine looks like many clients to a proxy hashing on them).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        on_message: MessageHandler | None = None,
        on_close: CloseHandler | None = None,
        max_size: int = 16 * 1024 * 1024,
        source_address: str | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.on_message = on_message
        self.on_close = on_close
        self.source_address = source_address
        self._uri = parse_uri(url)
        self._protocol = ClientProtocol(self._uri, max_size=max_size)
        self._sock: socket.socket | None = None
        self._write_lock = Semaphore()
        self._refs = itertools.count(1)
        self._pending: dict[str, AsyncResult] = {}
        self._fragments: list[bytes] = []
        self._reader: gevent.Greenlet | None = None
        self._closing = False
        self._done = Event()
        self.close_reason: BaseException | None = None

    # -- connecting -------------------------------------------------------------------------

    def connect(self) -> None:
        """Open the TCP connection, do the WebSocket handshake, start the reader greenlet."""
        timed_out = ConnectError(f"connect timed out after {self.timeout}s")
        try:
            with gevent.Timeout(self.timeout, timed_out):
                source = (self.source_address, 0) if self.source_address else None
                sock = socket.create_connection((self._uri.host, self._uri.port), None, source)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._uri.secure:
                    context = ssl.create_default_context()
                    sock = context.wrap_socket(sock, server_hostname=self._uri.host)
                self._sock = sock
                self._protocol.send_request(self._protocol.connect())
                self._flush()
                early: list[Any] = []
                while self._protocol.state is State.CONNECTING:
                    data = sock.recv(65536)
                    if data:
                        self._protocol.receive_data(data)
                    else:
                        self._protocol.receive_eof()
                    early.extend(self._protocol.events_received())
                    if not data:
                        break
        except OSError as exc:
            self._abort()
            raise ConnectError(f"{type(exc).__name__}: {exc}") from exc
        except ConnectError:
            self._abort()
            raise
        if self._protocol.state is not State.OPEN:
            self._abort()
            response = next((e for e in early if isinstance(e, Response)), None)
            if response is not None:
                raise ConnectError(f"HTTP {response.status_code} {response.reason_phrase}")
            raise ConnectError(f"handshake failed: {self._protocol.handshake_exc!r}")
        frames = [event for event in early if isinstance(event, Frame)]
        self._reader = gevent.spawn(self._read_loop, frames)

    # -- sending ----------------------------------------------------------------------------

    def next_ref(self) -> str:
        return str(next(self._refs))

    def push(
        self,
        topic: str,
        event: str,
        payload: Any,
        join_ref: str | None = None,
        ref: str | None = None,
    ) -> int:
        """Send one frame; returns its size in bytes. Raises :class:`ConnectionLost`."""
        data = orjson.dumps([join_ref, ref, topic, event, payload])
        with self._write_lock:
            if self._done.is_set() or self._protocol.state is not State.OPEN:
                raise ConnectionLost(f"connection closed ({self.close_reason!r})")
            self._protocol.send_text(data)
            try:
                self._flush()
            except OSError as exc:
                raise ConnectionLost(f"{type(exc).__name__}: {exc}") from exc
        return len(data)

    def call(
        self,
        topic: str,
        event: str,
        payload: Any,
        join_ref: str | None = None,
        timeout: float | None = None,
        ref: str | None = None,
    ) -> tuple[Any, int]:
        """Push and wait for the reply: returns ``(response, reply frame size)``.

        Raises :class:`ReplyError` for a non-ok status, :class:`ReplyTimeout`, or
        :class:`ConnectionLost`.
        """
        ref = ref or self.next_ref()
        result: AsyncResult = AsyncResult()
        self._pending[ref] = result
        try:
            self.push(topic, event, payload, join_ref=join_ref, ref=ref)
            try:
                reply, size = result.get(timeout=self.timeout if timeout is None else timeout)
            except gevent.Timeout:  # a BaseException: turn it into an ordinary failure
                raise ReplyTimeout(f"no reply to {event} on {topic} (ref {ref})") from None
        finally:
            self._pending.pop(ref, None)
        status = reply.get("status") if isinstance(reply, dict) else None
        response = reply.get("response") if isinstance(reply, dict) else reply
        if status != "ok":
            raise ReplyError(str(status), response)
        return response, size

    # -- closing ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._done.is_set()

    def close(self, timeout: float = 2.0) -> None:
        """Send a close frame, wait briefly for the server's, then drop the socket."""
        if self._sock is None:
            return
        self._closing = True
        if not self._done.is_set():
            with self._write_lock:
                if self._protocol.state is State.OPEN:
                    self._protocol.send_close(1000)
                    try:
                        self._flush()
                    except OSError:
                        pass
            self._done.wait(timeout)
        if self._reader is not None:
            self._reader.kill(block=True)
        self._abort()

    def _abort(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    # -- the reader greenlet ----------------------------------------------------------------

    def _flush(self) -> None:
        assert self._sock is not None
        for data in self._protocol.data_to_send():
            if data:
                self._sock.sendall(data)
            else:  # websockets asks for a half-close once the closing handshake is done
                try:
                    self._sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def _read_loop(self, early: list[Frame]) -> None:
        reason: BaseException | None = None
        try:
            for frame in early:
                self._handle_frame(frame)
            sock = self._sock
            while sock is not None:
                data = sock.recv(65536)
                with self._write_lock:
                    if data:
                        self._protocol.receive_data(data)
                    else:
                        self._protocol.receive_eof()
                    events = self._protocol.events_received()
                    try:
                        self._flush()  # pongs, and the answer to a close frame
                    except OSError:
                        pass
                for frame in events:
                    self._handle_frame(frame)
                if not data or self._protocol.state is State.CLOSED:
                    break
            if not self._closing:
                close = self._protocol.close_rcvd
                why = f"close frame {close}" if close is not None else "no close frame"
                reason = ConnectionLost(f"server ended the connection ({why})")
        except OSError as exc:
            reason = ConnectionLost(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bad frame or a failing callback: end this connection
            reason = exc
        finally:
            self._finish(reason)

    def _handle_frame(self, frame: Frame) -> None:
        # Binary frames only carry ArrayBuffer payloads (PROTOCOL.md §2), which this client
        # never pushes; ping/pong/close are handled by the protocol object.
        if frame.opcode is Opcode.TEXT:
            if not frame.fin:
                self._fragments = [bytes(frame.data)]
                return
            data = bytes(frame.data)
        elif frame.opcode is Opcode.CONT and self._fragments:
            self._fragments.append(bytes(frame.data))
            if not frame.fin:
                return
            data, self._fragments = b"".join(self._fragments), []
        else:
            return
        join_ref, ref, topic, event, payload = orjson.loads(data)
        if event == "phx_reply" and ref is not None:
            waiter = self._pending.pop(ref, None)
            if waiter is not None:
                waiter.set((payload, len(data)))
                return
        if self.on_message is not None:
            self.on_message(join_ref, topic, event, payload)

    def _finish(self, reason: BaseException | None) -> None:
        if self._done.is_set():
            return
        self.close_reason = reason
        self._done.set()
        lost = ConnectionLost(f"connection closed ({reason!r})")
        for waiter in list(self._pending.values()):
            waiter.set_exception(lost)
        self._pending.clear()
        if not self._closing and self.on_close is not None:
            self.on_close(reason)
