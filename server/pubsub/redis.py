"""Redis backend: one Redis channel per topic, a publisher task and a listener task.

Channels
    Topic ``T`` travels on the Redis channel ``<prefix>T`` (``sb:t:T`` by default). Redis
    pub/sub ignores the database number, so deployments sharing one Redis need distinct
    prefixes. A node SUBSCRIBEs on a topic's first local subscriber and UNSUBSCRIBEs on its
    last; ``subscribe``/``unsubscribe`` only record the wish, a task applies it.

Envelope
    ``kind:1 | len(node):1 | len(event):4 (big-endian) | node | event | frame``, with kind
    ``t`` (the frame is JSON text, sent as UTF-8) or ``b`` (a binary frame, as is). Lengths,
    not separators, so an event name may hold any character. Redis echoes a node's own
    publications back to it; the node id lets it drop them (the core delivered locally).

History (see :mod:`.redis_history`)
    A broadcast on a history topic is not PUBLISHed by the node but handed to a script
    that appends it to the topic's stream and PUBLISHes it with its position, atomically:
    so the order of positions is the order in which every node receives them, whichever
    node published. Kind ``h``: ``h | len(node) | len(event) | node | event | tag:8 |
    offset SP epoch LF | frame``. Its echo is *not* dropped: the publishing node delivers
    its own history broadcasts when they come back, in their place in the order.

Tasks
    The publisher drains a bounded queue and sends what it finds in one pipeline. The
    listener owns the subscriber connection; on any error it reports the backend
    disconnected, reconnects with capped exponential backoff and jitter, resubscribes every
    wanted topic, and calls the reconnect listeners so state such as presence can resync.
    While disconnected, or when the queue is full, broadcasts are dropped and counted in
    :attr:`RedisBackend.dropped`: local fan-out has already happened, and a real-time
    message delivered minutes late is worth less than the memory it would hold.

    Broadcasts on history topics are the exception (buffer-and-write-later): while Redis
    is unreachable they wait in the same bounded queue, in order, and are written once it
    is back, so clients get them late but get them (and can recover them). A write that
    failed is retried; the script skips one it has already applied (each carries this
    node's sequence number), so a retry never writes it twice. Only when the queue is full
    is a history broadcast refused (``publish_history`` returns False and the publisher
    is told).

``subscribe`` returns a future that is done once Redis confirmed the SUBSCRIBE (a PING
sent after it was answered). Beyond :class:`~server.pubsub.base.Backend`:
``add_status_listener``, ``add_reconnect_listener``, ``settled()`` (wait until Redis
confirmed the subscriptions made so far), and counters (``published``, ``received``,
``dropped``, ``malformed``, ``reconnects``, ``queued``) for metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import secrets
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from switchboard.server.codec import Frame
from switchboard.server.pubsub import redis_history
from switchboard.server.pubsub.base import (
    Backend,
    BackendStatus,
    Deliver,
    DeliverHistory,
    Unavailable,
    _ignore_history,
)
from switchboard.server.pubsub.history import HistoryLimits, HistoryRead, Position

logger = logging.getLogger("switchboard.pubsub")

#: Redis channel of topic T: ``<prefix>T``.
DEFAULT_PREFIX = "sb:t:"
_HEADER = struct.Struct("!cBI")
_TEXT, _BINARY, _HISTORY = b"t", b"b", b"h"
_HISTORY_CODE = _HISTORY[0]
_TAG = struct.Struct("!Q")
_MESSAGE = b"message"
_ALIVE = b"sb:alive"
_CHUNK = 1000  # channels per SUBSCRIBE / UNSUBSCRIBE command

StatusListener = Callable[[BackendStatus], None]
ReconnectListener = Callable[[], None]
#: A broadcast waiting to go out: (topic, event, frame, seq, tag); seq 0: a plain PUBLISH,
#: else a history write with this node's sequence number.
_Item = tuple[str, str, Frame, int, int]


class MalformedEnvelope(ValueError):
    """A message on one of our channels that this module did not write."""


def encode_envelope(node: bytes, event: str, frame: Frame) -> bytes:
    event_bytes = event.encode()
    if isinstance(frame, str):
        kind, body = _TEXT, frame.encode()
    else:
        kind, body = _BINARY, bytes(frame)
    return b"".join((_HEADER.pack(kind, len(node), len(event_bytes)), node, event_bytes, body))


def decode_envelope(data: bytes) -> tuple[bytes, str, Frame]:
    """``(node, event, frame)``; the frame has the type it was published with."""
    node, event_start = _origin(data)
    return (node, *_event_and_frame(data, event_start))


def encode_history_head(node: bytes, event: str, tag: int) -> bytes:
    """The start of a history envelope; the script appends the position and the frame."""
    event_bytes = event.encode()
    head = _HEADER.pack(_HISTORY, len(node), len(event_bytes))
    return b"".join((head, node, event_bytes, _TAG.pack(tag)))


def _history_fields(data: bytes, event_start: int) -> tuple[str, int, Position, str]:
    _, _, event_length = _HEADER.unpack_from(data)
    tag_start = event_start + event_length
    position_start = tag_start + _TAG.size
    newline = data.find(b"\n", position_start, position_start + 96)
    if newline < 0:
        raise MalformedEnvelope("history envelope without a position")
    offset, _, epoch = data[position_start:newline].partition(b" ")
    try:
        position = Position(epoch.decode("ascii"), int(offset))
        event = data[event_start:tag_start].decode()
        frame = data[newline + 1 :].decode()
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedEnvelope(f"bad history envelope: {exc}") from None
    (tag,) = _TAG.unpack_from(data, tag_start)
    return event, tag, position, frame


def _origin(data: bytes) -> tuple[bytes, int]:
    if len(data) < _HEADER.size:
        raise MalformedEnvelope(f"envelope of {len(data)} bytes is shorter than its header")
    node_end = _HEADER.size + data[1]
    return data[_HEADER.size : node_end], node_end


def _event_and_frame(data: bytes, event_start: int) -> tuple[str, Frame]:
    kind, _, event_length = _HEADER.unpack_from(data)
    frame_start = event_start + event_length
    if frame_start > len(data):
        raise MalformedEnvelope("envelope is shorter than its header says")
    try:
        event = data[event_start:frame_start].decode()
        if kind == _TEXT:
            return event, data[frame_start:].decode()
    except UnicodeDecodeError as exc:
        raise MalformedEnvelope(f"envelope text is not UTF-8: {exc}") from None
    if kind == _BINARY:
        return event, data[frame_start:]
    raise MalformedEnvelope(f"unknown frame kind {kind!r}")


def backoff_delays(initial: float, maximum: float) -> Iterator[float]:
    """``initial`` doubling up to ``maximum``, each drawn from the upper half (jitter)."""
    for attempt in itertools.count():
        ceiling = min(maximum, initial * 2 ** min(attempt, 32))
        yield random.uniform(ceiling / 2, ceiling)


def _chunks(items: list[bytes]) -> Iterable[list[bytes]]:
    return (items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK))


def _describe(exc: BaseException) -> str:
    text = str(exc) or ("timed out" if isinstance(exc, TimeoutError) else "no detail")
    return f"{type(exc).__name__}: {text}"


class RedisBackend(Backend):
    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        queue_size: int = 10_000,
        batch_size: int = 500,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        ping_interval: float = 5.0,
        connect_timeout: float = 2.0,
        command_timeout: float = 5.0,
        history: HistoryLimits | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.queue_size = queue_size
        self.limits = history or HistoryLimits()
        # Fixed for the backend's life: computed once, not on every history write.
        self._ttl = redis_history.ttl(self.limits)
        self._meta_ttl = redis_history.meta_ttl(self.limits)
        self.batch_size = batch_size
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.ping_interval = ping_interval
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.published = 0  # broadcasts Redis accepted from this node
        self.received = 0  # broadcasts from other nodes handed to the core
        self.dropped = 0  # broadcasts not sent: disconnected, queue full, or Redis error
        self.malformed = 0  # messages on our channels that would not decode
        self.reconnects = 0

        self._node = b""
        self._deliver: Deliver | None = None
        self._deliver_history: DeliverHistory = _ignore_history
        self._pending: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._up = asyncio.Event()  # set while connected
        self._sequence = itertools.count(1)  # of this node's history writes
        self._epoch_base = "r" + secrets.token_hex(4)
        self._epochs = itertools.count(1)
        self._keys = redis_history.Keys(prefix)
        self._node_key = b""  # the key of this node's write sequence, set at start
        self._read_script: Any = None
        self._wanted: dict[bytes, str] = {}  # Redis channel -> topic
        self._applied: set[bytes] = set()  # channels subscribed on the current connection
        self._changed = asyncio.Event()
        self._status = BackendStatus(False, "not started")
        self._status_listeners: list[StatusListener] = []
        self._reconnect_listeners: list[ReconnectListener] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._publisher_client: Redis | None = None
        self._listener_client: Redis | None = None
        self._reset_publisher = False
        self._awaiting_pong = False
        self._tokens = itertools.count(1)
        self._settle_waiting: list[asyncio.Future[None]] = []
        self._settle_sent: dict[bytes, list[asyncio.Future[None]]] = {}

    # -- Backend ---------------------------------------------------------------------------

    async def start(
        self, node: str, deliver: Deliver, deliver_history: DeliverHistory = _ignore_history
    ) -> None:
        if self._tasks:
            raise RuntimeError("RedisBackend.start() called twice; stop() it first")
        node_bytes = node.encode()
        if not 0 < len(node_bytes) < 256:
            raise RuntimeError(f"node id must be 1 to 255 bytes of UTF-8, got {node!r}")
        self._node = node_bytes
        self._node_key = self._keys.node(node_bytes)
        self._deliver = deliver
        self._deliver_history = deliver_history
        name = "switchboard-" + re.sub(r"[^\w.:-]", "_", node)
        self._publisher_client = self._client(name)
        self._listener_client = self._client(name)
        self._read_script = self._publisher_client.register_script(redis_history.READ)
        loop = asyncio.get_running_loop()
        first_attempt: asyncio.Future[None] = loop.create_future()
        listener = loop.create_task(self._listen(first_attempt), name=f"redis-listener {node}")
        publisher = loop.create_task(self._publish_batches(), name=f"redis-publisher {node}")
        self._tasks = [listener, publisher]
        for task in self._tasks:
            task.add_done_callback(self._task_ended)
        # Return once the first connection attempt has succeeded or failed; if it failed,
        # the listener keeps trying and ``status`` says why.
        await asyncio.wait({first_attempt, listener}, return_when=asyncio.FIRST_COMPLETED)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for future in self._settle_waiting + [f for fs in self._settle_sent.values() for f in fs]:
            future.cancel()
        self._settle_waiting, self._settle_sent = [], {}
        self._pending.clear()
        for client in (self._publisher_client, self._listener_client):
            if client is not None:
                await client.aclose()
        self._publisher_client = self._listener_client = None
        self._deliver = None
        if tasks:
            self._set_status(BackendStatus(False, "stopped"))

    def subscribe(self, topic: str) -> asyncio.Future[None] | None:
        self._wanted[self._channel(topic)] = topic
        self._changed.set()
        if not self._tasks:
            return None
        confirmed = asyncio.get_running_loop().create_future()
        self._settle_waiting.append(confirmed)
        return confirmed

    def unsubscribe(self, topic: str) -> None:
        self._wanted.pop(self._channel(topic), None)
        self._changed.set()

    def publish(self, topic: str, event: str, frame: Frame) -> None:
        if not self._status.connected or len(self._pending) >= self.queue_size:
            self.dropped += 1
            return
        self._pending.append((topic, event, frame, 0, 0))
        self._wakeup.set()

    def publish_history(self, topic: str, event: str, frame: str, tag: int) -> bool:
        if len(self._pending) >= self.queue_size:
            return False
        self._pending.append((topic, event, frame, next(self._sequence), tag))
        self._wakeup.set()
        return True

    async def history(
        self, topic: str, since: Position | None, upto: int | None = None
    ) -> HistoryRead:
        if not self._status.connected or self._read_script is None:
            raise Unavailable(f"Redis unavailable: {self._status.reason}")
        keys = self._keys
        args = [
            "" if since is None else since.epoch,
            0 if since is None else since.offset,
            "" if upto is None else upto,
            self._meta_ttl,
            self._new_epoch(),
            self.limits.size,
            self._ttl,
        ]
        read = self._read_script(keys=[keys.log(topic), keys.meta(topic)], args=args)
        try:
            # wait_for, not asyncio.timeout: a join runs this inline, outside any task.
            reply = await asyncio.wait_for(read, self.command_timeout)
        except Exception as exc:
            raise Unavailable(f"reading the history of {topic} failed: {_describe(exc)}") from exc
        return redis_history.parse_read(reply, since, upto, self.limits.max_bytes)

    @property
    def status(self) -> BackendStatus:
        return self._status

    # -- beyond the Backend interface -------------------------------------------------------

    def add_status_listener(self, listener: StatusListener) -> None:
        """Call ``listener(status)`` each time the backend connects or disconnects."""
        self._status_listeners.append(listener)

    def add_reconnect_listener(self, listener: ReconnectListener) -> None:
        """Call ``listener()`` after each reconnection, once every topic is resubscribed.

        Also after the first connection if Redis was down at start. Broadcasts made while
        disconnected are lost; this is the moment to resync state (presence) with the other
        nodes.
        """
        self._reconnect_listeners.append(listener)

    async def settled(self) -> None:
        """Return once Redis has applied every subscribe and unsubscribe made before the call.

        Waits through an outage (a reconnection resubscribes everything).
        """
        if not self._tasks:
            raise RuntimeError("RedisBackend.settled() needs a started backend")
        future = asyncio.get_running_loop().create_future()
        self._settle_waiting.append(future)
        self._changed.set()
        await future

    @property
    def queued(self) -> int:
        return len(self._pending)

    # -- internals -------------------------------------------------------------------------

    def _client(self, name: str) -> Redis:
        # No retries inside redis-py (and no reconnect-on-error, which would also hide the
        # original error): the listener owns reconnection, and a retried PUBLISH could be
        # delivered twice. No socket_timeout either: redis-py applies it with
        # asyncio.wait_for, which on Python 3.11 can swallow a cancellation (stop() would
        # hang); our own asyncio.timeout blocks bound each exchange instead.
        client: Redis = Redis.from_url(
            self.url,
            retry=Retry(NoBackoff(), 0, supported_errors=()),
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=None,
            client_name=name,
            protocol=2,  # RESP2: pub/sub replies skip redis-py's RESP3 push-handler path
        )
        return client

    def _channel(self, topic: str) -> bytes:
        return (self.prefix + topic).encode()

    def _new_epoch(self) -> str:
        return f"{self._epoch_base}{next(self._epochs):x}"

    def _set_status(self, status: BackendStatus) -> None:
        before, self._status = self._status, status
        if status.connected:
            self._up.set()
        else:
            self._up.clear()
        if before.connected == status.connected:
            return
        for listener in list(self._status_listeners):
            try:
                listener(status)
            except Exception:
                logger.exception("pub/sub status listener %r failed", listener)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is None:
            return
        reason = f"{task.get_name()} crashed: {_describe(exc)}"
        logger.error("pub/sub backend lost: %s", reason, exc_info=exc)
        self._set_status(BackendStatus(False, reason))

    # listener ------------------------------------------------------------------------------

    async def _listen(self, first_attempt: asyncio.Future[None]) -> None:
        assert self._listener_client is not None
        delays = backoff_delays(self.backoff_initial, self.backoff_max)
        ever_connected = failed = False
        while True:
            pubsub = self._listener_client.pubsub()
            try:
                await self._connect(pubsub)
                delays = backoff_delays(self.backoff_initial, self.backoff_max)
                self._set_status(BackendStatus(True))
                if failed:
                    self.reconnects += 1
                    self._reset_publisher = True  # its pooled connection died with Redis
                    logger.info("pub/sub backend reconnected", extra={"event": "pubsub_up"})
                    self._notify_reconnected()
                else:
                    logger.info("pub/sub backend connected", extra={"event": "pubsub_up"})
                ever_connected, failed = True, False
                if not first_attempt.done():
                    first_attempt.set_result(None)
                await self._serve(pubsub)
                raise ConnectionError("listener stopped reading")
            except Exception as exc:
                reason = _describe(exc)
                if not failed:
                    verb = "lost" if ever_connected else "unavailable"
                    logger.warning(
                        "pub/sub backend %s: %s", verb, reason, extra={"event": "pubsub_down"}
                    )
                else:
                    logger.debug("pub/sub backend still down: %s", reason)
                failed = True
                self._set_status(BackendStatus(False, reason))
                self._requeue_settle_waiters()
            finally:
                await self._close(pubsub)
            if not first_attempt.done():
                first_attempt.set_result(None)
            await asyncio.sleep(next(delays))

    async def _connect(self, pubsub: PubSub) -> None:
        """Connect and subscribe to every wanted topic; return once Redis confirmed it."""
        async with asyncio.timeout(self.connect_timeout + self.command_timeout):
            await pubsub.connect()
            channels = list(self._wanted)
            waiters = self._take_settle_waiters()
            for chunk in _chunks(channels):
                await pubsub.subscribe(*chunk)
            token = self._token()
            await pubsub.ping(token)
            while await self._handle(pubsub, await pubsub.parse_response(block=True)) != token:
                pass
        self._applied = set(channels)
        self._awaiting_pong = False
        for future in waiters:
            if not future.done():
                future.set_result(None)

    async def _serve(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read(pubsub), name="redis-listener-read")
        syncer = loop.create_task(self._sync(pubsub), name="redis-listener-sync")
        try:
            done, _ = await asyncio.wait({reader, syncer}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            reader.cancel()
            syncer.cancel()
            await asyncio.gather(reader, syncer, return_exceptions=True)

    async def _read(self, pubsub: PubSub) -> None:
        parse = pubsub.parse_response
        while True:
            response = await parse(block=True)
            self._awaiting_pong = False
            # Hot path: a broadcast skips redis-py's per-message dict and bookkeeping. (A
            # list subclass with hiredis, which returns RESP3 pushes as PushNotification.)
            if isinstance(response, list) and response[0] == _MESSAGE:
                self._on_message(response[1], response[2])
            else:
                await self._handle(pubsub, response)

    async def _handle(self, pubsub: PubSub, response: Any) -> bytes | None:
        """Dispatch one reply on the subscriber connection; returns a PING's token."""
        if response is None:
            return None
        message = await pubsub.handle_message(response)
        if message is None:
            return None
        if message["type"] == "message":
            self._on_message(message["channel"], message["data"])
            return None
        if message["type"] != "pong":
            return None
        token = bytes(message["data"])
        for future in self._settle_sent.pop(token, ()):
            if not future.done():
                future.set_result(None)
        return token

    def _on_message(self, channel: bytes, data: bytes) -> None:
        topic = self._wanted.get(channel)
        if topic is None or self._deliver is None:
            return  # unsubscribed since; Redis has not processed the UNSUBSCRIBE yet
        try:
            node, event_start = _origin(data)
            if data[0] == _HISTORY_CODE:
                event, tag, position, text = _history_fields(data, event_start)
                self.received += 1
                try:
                    self._deliver_history(
                        topic, event, text, position, tag if node == self._node else 0
                    )
                except Exception:
                    logger.exception("delivering a history broadcast on %s failed", topic)
                return
            if node == self._node:
                return
            event, frame = _event_and_frame(data, event_start)
        except MalformedEnvelope as exc:
            self.malformed += 1
            if self.malformed == 1 or self.malformed % 1000 == 0:
                logger.warning("dropping a malformed message on %r: %s", channel, exc)
            return
        self.received += 1
        try:
            self._deliver(topic, event, frame)
        except Exception:
            logger.exception("delivering a broadcast from Redis on %s failed", topic)

    async def _sync(self, pubsub: PubSub) -> None:
        """Apply subscription changes, answer ``settled()``, and PING an idle connection."""
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self.ping_interval
        while True:
            self._changed.clear()
            wanted = set(self._wanted)
            added, removed = wanted - self._applied, self._applied - wanted
            waiters = self._take_settle_waiters()
            async with asyncio.timeout(self.command_timeout):
                for chunk in _chunks(list(added)):
                    await pubsub.subscribe(*chunk)
                for chunk in _chunks(list(removed)):
                    await pubsub.unsubscribe(*chunk)
                self._applied = wanted
                if waiters:
                    token = self._token()
                    self._settle_sent[token] = waiters
                    await pubsub.ping(token)
            try:
                async with asyncio.timeout_at(next_ping):
                    await self._changed.wait()
            except TimeoutError:
                if self._awaiting_pong:
                    raise ConnectionError(
                        f"Redis did not answer a PING within {self.ping_interval}s"
                    ) from None
                self._awaiting_pong = True
                async with asyncio.timeout(self.command_timeout):
                    await pubsub.ping(_ALIVE)
                next_ping = loop.time() + self.ping_interval

    def _token(self) -> bytes:
        return b"sb:settled:%d" % next(self._tokens)

    def _take_settle_waiters(self) -> list[asyncio.Future[None]]:
        waiters, self._settle_waiting = self._settle_waiting, []
        return waiters

    def _requeue_settle_waiters(self) -> None:
        for waiters in self._settle_sent.values():
            self._settle_waiting.extend(waiters)
        self._settle_sent.clear()

    def _notify_reconnected(self) -> None:
        for listener in list(self._reconnect_listeners):
            try:
                listener()
            except Exception:
                logger.exception("pub/sub reconnect listener %r failed", listener)

    async def _close(self, pubsub: PubSub) -> None:
        try:
            await pubsub.aclose()
        except Exception as exc:
            logger.debug("closing the Redis subscriber connection failed: %s", exc)

    # publisher -----------------------------------------------------------------------------

    async def _publish_batches(self) -> None:
        pending = self._pending
        failing = False
        delays = backoff_delays(self.backoff_initial, self.backoff_max)
        while True:
            if not pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self._status.connected:
                self._drop_plain()
                await self._up.wait()
                continue
            batch = [pending.popleft() for _ in range(min(len(pending), self.batch_size))]
            try:
                await self._send(batch)
            except Exception as exc:
                kept = [item for item in batch if item[3]]  # history writes wait, in order
                self.dropped += len(batch) - len(kept)
                pending.extendleft(reversed(kept))
                if not failing:
                    logger.warning(
                        "pub/sub publish failed, dropping broadcasts (history ones wait) "
                        "until it works: %s",
                        _describe(exc),
                    )
                failing = True
                self._reset_publisher = True
                if kept:
                    await asyncio.sleep(next(delays))
            else:
                failing = False
                delays = backoff_delays(self.backoff_initial, self.backoff_max)

    def _drop_plain(self) -> None:
        """Disconnected: plain broadcasts are dropped, history writes keep their place."""
        kept = [item for item in self._pending if item[3]]
        self.dropped += len(self._pending) - len(kept)
        self._pending.clear()
        self._pending.extend(kept)

    async def _send(self, batch: list[_Item]) -> None:
        client = self._publisher_client
        assert client is not None
        if self._reset_publisher:
            self._reset_publisher = False
            await client.connection_pool.disconnect()
        commands: list[tuple[Any, ...]] = []
        for topic, event, frame, seq, tag in batch:
            try:
                if seq:
                    commands.append(self._history_write(topic, event, frame, seq, tag))
                else:
                    envelope = encode_envelope(self._node, event, frame)
                    commands.append(("PUBLISH", self._channel(topic), envelope))
            except (UnicodeEncodeError, struct.error) as exc:
                self.dropped += 1
                logger.warning("cannot publish on %s %s: %s", topic, event, exc)
        if not commands:
            return
        async with asyncio.timeout(self.command_timeout):
            if len(commands) == 1 and commands[0][0] == "PUBLISH":
                await client.execute_command(*commands[0])
                self.published += 1
                return
            results = await self._pipeline(client, commands)
            missing = [
                c for c, r in zip(commands, results, strict=True) if isinstance(r, NoScriptError)
            ]
            if missing:  # Redis restarted or flushed its scripts: load it, write those again
                await client.script_load(redis_history.WRITE)
                results = [r for r in results if not isinstance(r, NoScriptError)]
                results += await self._pipeline(client, missing)
        failed = [result for result in results if isinstance(result, Exception)]
        self.published += len(results) - len(failed)
        self.dropped += len(failed)
        if failed:
            logger.warning("Redis refused %d broadcasts: %s", len(failed), failed[0])

    async def _pipeline(self, client: Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
        async with client.pipeline(transaction=False) as pipeline:
            for command in commands:
                pipeline.execute_command(*command)
            return list(await pipeline.execute(raise_on_error=False))

    def _history_write(
        self, topic: str, event: str, frame: Frame, seq: int, tag: int
    ) -> tuple[Any, ...]:
        keys = self._keys
        return (
            "EVALSHA",
            redis_history.WRITE_SHA,
            3,
            keys.log(topic),
            keys.meta(topic),
            self._node_key,
            self._channel(topic),
            encode_history_head(self._node, event, tag),
            event,
            frame,
            seq,
            self.limits.size,
            self._ttl,
            self._meta_ttl,
            self._new_epoch(),
        )
