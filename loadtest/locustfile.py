"""Locust load test: WebSocket users speaking the Phoenix Channels V2 protocol to Switchboard.

Each locust user holds one socket (its own user id, so the per-user socket limit never
bites), joins ``room:load-<i % rooms>`` and then, between think times, either

- pings: ``ping`` with a small payload; the reply must echo it. Recorded as ``WS ping`` with
  the round-trip time;
- or shouts: ``shout`` with ``{from, id, sent_at: time.time()}``. Every member receives it
  (sender included) and records ``broadcast shout latency`` = receive time - ``sent_at``. The
  sender also checks that its own copy comes back within the reply timeout (a failure
  otherwise), so lost broadcasts show up as failures.

``WS connect``, ``WS join``, ``WS leave`` and ``WS heartbeat`` (every ``--heartbeat`` seconds,
as phoenix.js does) are requests too. An error reply, a timeout, a dropped connection or a
``phx_error``/``phx_close`` on the room is a failure; the next task reconnects and rejoins.
presence_state/presence_diff frames are received and ignored.

Run it headless against one node (start the node with ``SWITCHBOARD_LIMITS=off``, or keep the
spawn rate and pace under the connect/push rate limits)::

    SWITCHBOARD_SECRET=... .venv/bin/locust -f loadtest/locustfile.py --headless \\
        -u 200 -r 50 -t 30s --host ws://127.0.0.1:4000 [--rooms 10] [--pace 1.0]

Against the nginx cluster (``SWITCHBOARD_LIMITS=off switchboard cluster --nodes 3``; use the
secret it prints), point ``--host`` at nginx and spread the users over loopback source
addresses, since nginx is sticky by client address and would otherwise put every socket on
one node: ``--host ws://127.0.0.1:8080 --source-ips 127.0.0.1-127.0.0.32``.

``--host`` takes ws://, wss://, http:// or https:// (http maps to ws); the socket path
``/socket/websocket`` is appended unless the host already ends in ``/websocket``. The token
secret comes from ``--token-secret`` or ``SWITCHBOARD_SECRET`` (default: the dev profile's
secret). Latencies use ``time.time()`` of the sender and the receiver, so run the workers of a
distributed locust on one machine (or on machines with synchronised clocks).
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import random
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import gevent
from gevent.event import AsyncResult, Event
from locust import User, events, task

from switchboard.client import Client, ClientError, Closed, NoFrame, ReplyError
from switchboard.server.auth import issue_token
from switchboard.server.config import DEV_SECRET

DEFAULT_HOST = "ws://127.0.0.1:4000"
SOCKET_PATH = "/socket/websocket"
WS = "WS"
BROADCAST = "broadcast"
SHOUT_LATENCY = "shout latency"

# One id per process so that users of different workers never share a user id.
RUN_ID = f"{os.getpid():x}{uuid.uuid4().hex[:6]}"
_user_numbers = itertools.count()


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--rooms",
        type=int,
        default=10,
        env_var="SWITCHBOARD_LOAD_ROOMS",
        help="number of rooms; user i joins room:load-<i %% rooms> (default 10)",
    )
    parser.add_argument(
        "--pace",
        type=float,
        default=1.0,
        env_var="SWITCHBOARD_LOAD_PACE",
        help="mean seconds between a user's tasks, uniform in [0.5, 1.5] x pace (default 1)",
    )
    parser.add_argument(
        "--shout-weight",
        type=int,
        default=1,
        env_var="SWITCHBOARD_LOAD_SHOUT_WEIGHT",
        help="relative weight of the shout task (ping has weight 3; default 1)",
    )
    parser.add_argument(
        "--reply-timeout",
        type=float,
        default=10.0,
        env_var="SWITCHBOARD_LOAD_TIMEOUT",
        help="seconds to wait for a reply, or for one's own shout (default 10)",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=30.0,
        env_var="SWITCHBOARD_LOAD_HEARTBEAT",
        help="seconds between heartbeats on each socket (default 30, like phoenix.js)",
    )
    parser.add_argument(
        "--source-ips",
        default="",
        env_var="SWITCHBOARD_LOAD_SOURCE_IPS",
        help="local addresses to connect from, user i uses the i-th (mod n): comma-separated, "
        "ranges allowed, e.g. 127.0.0.1-127.0.0.16 (nginx hashes on the client address)",
    )
    parser.add_argument(
        "--token-secret",
        default=DEV_SECRET,
        env_var="SWITCHBOARD_SECRET",
        is_secret=True,
        help="secret for signing socket tokens (default: the dev profile's secret)",
    )


def socket_url(host: str, token: str) -> str:
    """``ws://h:p`` / ``http://h:p/prefix`` -> ``ws://h:p[/prefix]/socket/websocket?token=..``."""
    parts = urlsplit(host or DEFAULT_HOST)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme or "ws")
    path = parts.path.rstrip("/")
    if not path.endswith("/websocket"):
        path += SOCKET_PATH
    return urlunsplit((scheme, parts.netloc, path, f"token={token}&vsn=2.0.0", ""))


def source_ips(spec: str) -> list[str]:
    """``"127.0.0.1-127.0.0.3,10.0.0.5"`` -> the four addresses, in order."""
    addresses: list[str] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        first, _, last = item.partition("-")
        start = ipaddress.ip_address(first)
        end = ipaddress.ip_address(last) if last else start
        if end < start:
            raise ValueError(f"empty address range {item!r}")
        addresses.extend(str(start + i) for i in range(int(end) - int(start) + 1))
    return addresses


MessageHandler = Callable[[Any, str, str, Any], None]  # join_ref, topic, event, payload
CloseHandler = Callable[[BaseException | None], None]


class ReadSocket:
    """A :class:`switchboard.client.Client` read by a greenlet of its own.

    A reply goes to the :meth:`request` waiting for its ref, every other frame to
    ``on_message`` (in the reader greenlet); ``on_close(reason)`` is called once if the
    connection ends before :meth:`close`. Any greenlet may send: the client locks its writes.
    """

    def __init__(
        self, client: Client, on_message: MessageHandler, on_close: CloseHandler, timeout: float
    ) -> None:
        self.client = client
        self.on_message = on_message
        self.on_close = on_close
        self.timeout = timeout
        self._pending: dict[str, AsyncResult] = {}
        self._closing = False
        self._done = Event()
        self._reader = gevent.spawn(self._read_loop)

    @property
    def closed(self) -> bool:
        return self._done.is_set()

    def request(self, ref: str, frame: list[Any], timeout: float | None = None) -> tuple[Any, int]:
        """Send ``frame`` (whose ref is ``ref``) and wait for its reply: ``(response, size)``.
        Raises ReplyError for a status other than ok, NoFrame, or Closed."""
        if self.closed:
            raise Closed(self.client.close_code, "connection already closed")
        waiter: AsyncResult = AsyncResult()
        self._pending[ref] = waiter  # before sending: the reply may come back at once
        try:
            self.client.send(frame)
            try:
                reply = waiter.get(timeout=self.timeout if timeout is None else timeout)
            except gevent.Timeout:  # a BaseException: turn it into an ordinary failure
                raise NoFrame(f"no reply to {frame[3]} on {frame[2]} (ref {ref})") from None
        finally:
            self._pending.pop(ref, None)
        if not isinstance(reply[4], dict) or reply[4].get("status") != "ok":
            raise ReplyError(reply)
        return reply[4].get("response"), len(Client.encode(reply))

    def call(self, topic: str, event: str, payload: Any, **options: Any) -> tuple[Any, int]:
        ref, frame = self.client.push_frame(topic, event, payload)
        return self.request(ref, frame, **options)

    def close(self) -> None:
        """Send a close frame, give the reader a moment to see the answer, then drop it."""
        self._closing = True
        with contextlib.suppress(OSError, ClientError):
            self.client.close(wait=False)
        self._done.wait(2.0)
        self._reader.kill(block=True)

    def _read_loop(self) -> None:
        reason: BaseException | None = None
        try:
            while True:
                frame = self.client.receive()
                if not isinstance(frame, list):
                    continue  # binary frames carry ArrayBuffer payloads, never pushed here
                join_ref, ref, topic, event, payload = frame
                waiter = self._pending.pop(ref, None) if event == "phx_reply" else None
                if waiter is not None:
                    waiter.set(frame)
                else:
                    self.on_message(join_ref, topic, event, payload)
        except Closed as exc:
            reason = exc
        except Exception as exc:  # a bad frame or a failing callback: end this connection
            reason = exc
        finally:
            self._done.set()
            lost = Closed(self.client.close_code, f"connection closed ({reason!r})")
            for waiter in list(self._pending.values()):
                waiter.set_exception(lost)
            self._pending.clear()
            if not self._closing:
                self.on_close(reason)


class PhoenixUser(User):
    host = DEFAULT_HOST

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        options = environment.parsed_options
        self.rooms = max(1, getattr(options, "rooms", 10))
        self.pace = getattr(options, "pace", 1.0)
        self.reply_timeout = getattr(options, "reply_timeout", 10.0)
        self.heartbeat_interval = getattr(options, "heartbeat", 30.0)
        self.secret = getattr(options, "token_secret", DEV_SECRET)
        number = next(_user_numbers)
        self.user_id = f"load-{RUN_ID}-{number}"
        self.topic = f"room:load-{number % self.rooms}"
        addresses = source_ips(getattr(options, "source_ips", "") or "")
        self.source_ip = addresses[number % len(addresses)] if addresses else None
        self.socket: ReadSocket | None = None
        self.join_ref: str | None = None
        self.heartbeats: gevent.Greenlet | None = None
        self.seq = itertools.count()
        self.own_shouts: dict[str, AsyncResult] = {}
        weight = max(0, getattr(options, "shout_weight", 1))
        self.tasks = [PhoenixUser.ping] * 3 + [PhoenixUser.shout] * weight

    def wait_time(self) -> float:
        return random.uniform(0.5 * self.pace, 1.5 * self.pace)

    # -- recording --------------------------------------------------------------------------

    def record(
        self,
        request_type: str,
        name: str,
        started: float,
        size: int = 0,
        exception: BaseException | None = None,
    ) -> None:
        self.environment.events.request.fire(
            request_type=request_type,
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=size,
            exception=exception,
            context={"user": self.user_id},
        )

    def fail(self, name: str, exception: BaseException, request_type: str = WS) -> None:
        self.environment.events.request.fire(
            request_type=request_type,
            name=name,
            response_time=0,
            response_length=0,
            exception=exception,
            context={"user": self.user_id},
        )

    # -- lifecycle --------------------------------------------------------------------------

    def on_start(self) -> None:
        self.ensure_joined()

    def on_stop(self) -> None:
        socket, self.socket = self.socket, None
        if socket is None:
            return
        if self.heartbeats is not None:
            self.heartbeats.kill(block=False)
        join_ref, self.join_ref = self.join_ref, None  # the phx_close after the leave is expected
        if join_ref is not None and not socket.closed:
            started = time.perf_counter()
            try:
                _, size = socket.call(self.topic, "phx_leave", {})
            except Exception as exc:
                self.record(WS, "leave", started, exception=exc)
            else:
                self.record(WS, "leave", started, size)
        socket.close()

    def ensure_joined(self) -> bool:
        """Connect and join unless already in the room; False (failure recorded) if not."""
        if self.socket is not None and not self.socket.closed and self.join_ref is not None:
            return True
        if self.socket is None or self.socket.closed:
            if self.heartbeats is not None:
                self.heartbeats.kill(block=False)
            self.join_ref = None
            token = issue_token(self.secret, self.user_id)
            started = time.perf_counter()
            try:
                client = Client.connect(
                    socket_url(self.host, token),
                    timeout=self.reply_timeout,
                    source_address=self.source_ip,
                    history=False,
                )
            except Exception as exc:
                self.record(WS, "connect", started, exception=exc)
                return False
            self.record(WS, "connect", started)
            socket = ReadSocket(client, self.on_message, self.on_close, self.reply_timeout)
            self.socket = socket
            self.heartbeats = gevent.spawn(self.heartbeat_loop, socket)
        socket = self.socket
        join_ref, join = socket.client.join_frame(self.topic, {})
        started = time.perf_counter()
        try:
            _, size = socket.request(join_ref, join)
        except Exception as exc:
            self.record(WS, "join", started, exception=exc)
            return False
        self.record(WS, "join", started, size)
        self.join_ref = join_ref
        return True

    def heartbeat_loop(self, socket: ReadSocket) -> None:
        while not socket.closed:
            gevent.sleep(self.heartbeat_interval)
            if socket.closed:
                return
            started = time.perf_counter()
            try:
                _, size = socket.request(*socket.client.heartbeat_frame())
            except Exception as exc:
                if not socket.closed or not isinstance(exc, NoFrame):
                    self.record(WS, "heartbeat", started, exception=exc)
            else:
                self.record(WS, "heartbeat", started, size)

    # -- inbound frames (run in the socket's reader greenlet) -------------------------------

    def on_message(self, join_ref: Any, topic: str, event: str, payload: Any) -> None:
        if topic != self.topic:
            return
        if event == "shout" and isinstance(payload, dict) and "sent_at" in payload:
            latency = (time.time() - float(payload["sent_at"])) * 1000
            self.environment.events.request.fire(
                request_type=BROADCAST,
                name=SHOUT_LATENCY,
                response_time=max(0.0, latency),
                response_length=0,
                exception=None,
                context={"user": self.user_id},
            )
            waiter = self.own_shouts.pop(str(payload.get("id")), None)
            if waiter is not None:
                waiter.set(True)
        elif event in ("phx_error", "phx_close") and join_ref == self.join_ref:
            self.join_ref = None  # the next task rejoins
            self.fail("channel", RuntimeError(f"{event} on {topic}: {payload!r}"))

    def on_close(self, reason: BaseException | None) -> None:
        self.join_ref = None
        self.fail("connection", reason or RuntimeError("connection closed by the server"))

    # -- tasks ------------------------------------------------------------------------------

    @task
    def ping(self) -> None:
        if not self.ensure_joined():
            return
        assert self.socket is not None
        payload = {"user": self.user_id, "n": next(self.seq), "body": "ping"}
        started = time.perf_counter()
        try:
            response, size = self.socket.call(self.topic, "ping", payload)
            if response != payload:
                raise ValueError(f"ping reply {response!r} does not echo {payload!r}")
        except Exception as exc:
            self.record(WS, "ping", started, exception=exc)
        else:
            self.record(WS, "ping", started, size)

    @task
    def shout(self) -> None:
        if not self.ensure_joined():
            return
        assert self.socket is not None
        shout_id = f"{self.user_id}:{next(self.seq)}"
        waiter: AsyncResult = AsyncResult()
        self.own_shouts[shout_id] = waiter
        payload = {"from": self.user_id, "id": shout_id, "sent_at": time.time(), "body": "hi"}
        try:
            self.socket.client.push(self.topic, "shout", payload)
            if not waiter.wait(self.reply_timeout):
                raise NoFrame(f"own shout {shout_id} not received in {self.reply_timeout}s")
        except Exception as exc:
            self.fail(SHOUT_LATENCY, exc, request_type=BROADCAST)
        finally:
            self.own_shouts.pop(shout_id, None)
