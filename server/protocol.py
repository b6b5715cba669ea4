"""The per-socket Phoenix protocol as a pure state machine (sans-I/O).

Data in (:meth:`SocketProtocol.receive`), events out (:meth:`events_received`), frames out
(:meth:`data_to_send`). It answers heartbeats, routes joins and leaves, refuses unmatched
topics and joins over the channel limit, closes a duplicate join's old channel with the old
join_ref, and drops pushes that carry a stale join_ref. The driver
(:mod:`~switchboard.server.socket_server`) runs the channels and reports their outcomes
back through :meth:`join_succeeded`, :meth:`reply`, :meth:`channel_closed` and friends,
which turn them into frames.

It imports neither asyncio nor Starlette, so it is tested with data in and frames out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from switchboard.server import codec
from switchboard.server.codec import Frame, Message, Payload
from switchboard.server.errors import ProtocolError, UnsupportedVersion

DEFAULT_MAX_CHANNELS = 100
DEFAULT_MAX_FRAME_SIZE = 1024 * 1024
#: The response sent in place of one that cannot be encoded as JSON.
UNENCODABLE = {"reason": "unencodable_reply"}


def negotiate_version(vsn: str | None) -> str:
    """Accept V2 (``2.x``); a missing ``vsn`` means 1.0.0, which we refuse like any other."""
    version = vsn or "1.0.0"
    if version.split(".", 1)[0] != "2":
        raise UnsupportedVersion(f"protocol version {version} is not supported; use 2.0.0")
    return version


@dataclass(frozen=True, slots=True)
class JoinRequested:
    """Start a channel on ``topic``. ``replaces`` is the join_ref of a channel to stop first."""

    topic: str
    join_ref: str
    ref: str | None
    payload: Any
    replaces: str | None = None


@dataclass(frozen=True, slots=True)
class PushReceived:
    """A client event for a joined (or joining) channel, to be passed to ``handle_in``."""

    message: Message


@dataclass(frozen=True, slots=True)
class LeaveRequested:
    """The client leaves ``topic``; the channel stops, then :meth:`left` answers."""

    topic: str
    join_ref: str
    ref: str | None


Event = JoinRequested | PushReceived | LeaveRequested


@dataclass(slots=True)
class _Channel:
    join_ref: str
    joined: bool = False
    leaving: bool = False


class SocketProtocol:
    """Protocol state of one socket: which topics are joined under which join_ref."""

    __slots__ = (
        "_matches",
        "max_channels",
        "max_frame_size",
        "_channels",
        "_closing",
        "_events",
        "_frames",
    )

    def __init__(
        self,
        matches: Callable[[str], bool],
        *,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self._matches = matches
        self.max_channels = max_channels
        self.max_frame_size = max_frame_size
        self._channels: dict[str, _Channel] = {}
        self._closing: dict[
            str, str
        ] = {}  # topic -> old join_ref to phx_close after the join reply
        self._events: list[Event] = []
        self._frames: list[Frame] = []

    # -- input ---------------------------------------------------------------------------

    def receive(self, data: Frame) -> None:
        """Handle one frame from the client. Raises :class:`ProtocolError` if it is unusable."""
        self.handle(self.decode(data))

    def decode(self, data: Frame) -> Message:
        """The message in a frame from the client; :class:`ProtocolError` if it is unusable."""
        return codec.decode(data, self.max_frame_size)

    def refuse(self, message: Message, response: Payload) -> None:
        """Answer ``message`` with an error reply and otherwise ignore it (say, a rate limit)."""
        join_ref = message.join_ref
        if message.event == codec.PHX_JOIN:
            join_ref = join_ref or message.ref
        self._reply(join_ref, message.ref, message.topic, "error", response)

    def handle(self, message: Message) -> None:
        """Handle one decoded message from the client."""
        if message.topic == codec.PHOENIX_TOPIC and message.event == codec.HEARTBEAT:
            self._reply(None, message.ref, codec.PHOENIX_TOPIC, "ok", {})
        elif message.event == codec.PHX_JOIN:
            self._receive_join(message)
        elif message.event == codec.PHX_LEAVE:
            self._receive_leave(message)
        else:
            self._receive_push(message)

    def _receive_join(self, message: Message) -> None:
        topic = message.topic
        join_ref = message.join_ref or message.ref
        if join_ref is None:
            raise ProtocolError("phx_join needs a join_ref or a ref")
        if not isinstance(message.payload, dict):
            self._reply(join_ref, message.ref, topic, "error", {"reason": "invalid payload"})
            return
        if not self._matches(topic):
            self._reply(None, message.ref, topic, "error", {"reason": "unmatched topic"})
            return
        old = self._channels.get(topic)
        if old is None and len(self._channels) >= self.max_channels:
            self._reply(
                join_ref, message.ref, topic, "error", {"reason": "too many channels joined"}
            )
            return
        replaces = old.join_ref if old is not None else None
        if replaces is not None:
            self._closing[topic] = replaces
        self._channels[topic] = _Channel(join_ref)
        self._events.append(JoinRequested(topic, join_ref, message.ref, message.payload, replaces))

    def _receive_leave(self, message: Message) -> None:
        channel = self._channels.get(message.topic)
        if channel is None or (message.join_ref and message.join_ref != channel.join_ref):
            self._reply(message.join_ref, message.ref, message.topic, "ok", {})
            return
        channel.leaving = True
        self._events.append(LeaveRequested(message.topic, channel.join_ref, message.ref))

    def _receive_push(self, message: Message) -> None:
        channel = self._channels.get(message.topic)
        if channel is None or channel.leaving:
            self._reply(None, message.ref, message.topic, "error", {"reason": "unmatched topic"})
            return
        if message.join_ref is not None and message.join_ref != channel.join_ref:
            return  # stale: meant for a channel this socket has since replaced
        if not isinstance(message.payload, (dict, bytes)):
            self._reply(
                channel.join_ref, message.ref, message.topic, "error", {"reason": "invalid payload"}
            )
            return
        self._events.append(PushReceived(message))

    # -- outcomes reported by the driver ---------------------------------------------------

    def join_succeeded(self, topic: str, join_ref: str, ref: str | None, response: Payload) -> bool:
        """Reply ok to a join. Returns False if the join was superseded meanwhile, or if
        ``response`` could not be encoded (the client got an error: the join failed)."""
        channel = self._current(topic, join_ref)
        if channel is None:
            return False
        encoded = self._reply(join_ref, ref, topic, "ok", response)
        if encoded:
            channel.joined = True
        else:
            del self._channels[topic]
        self._close_replaced(topic)
        return encoded

    def join_failed(self, topic: str, join_ref: str, ref: str | None, response: Payload) -> None:
        """Reply error to a join (refused or crashed); the topic is free again."""
        if self._current(topic, join_ref) is not None:
            del self._channels[topic]
        self._reply(join_ref, ref, topic, "error", response)
        self._close_replaced(topic)

    def reply(
        self, topic: str, join_ref: str, ref: str | None, status: str, response: Payload
    ) -> bool:
        """Reply to a push, unless its channel is gone (the client would drop it anyway).
        False if ``response`` could not be encoded and the error ``unencodable_reply`` went
        instead."""
        if self._current(topic, join_ref) is None:
            return True
        return self._reply(join_ref, ref, topic, status, response)

    def push(
        self, topic: str, join_ref: str, event: str, payload: Payload, ref: str | None = None
    ) -> None:
        """Push from a channel to its client, only once the join reply went out (``ref``:
        the position of the broadcast a ``handle_out`` pushes on)."""
        channel = self._current(topic, join_ref)
        if channel is not None and channel.joined:
            self._frames.append(codec.encode_push(join_ref, topic, event, payload, ref))

    def push_json(self, topic: str, join_ref: str, event: str, payload_json: str) -> None:
        """Like :meth:`push`, with the payload already encoded as JSON text."""
        channel = self._current(topic, join_ref)
        if channel is not None and channel.joined:
            self._frames.append(codec.encode_push_json(join_ref, topic, event, payload_json))

    def left(self, topic: str, join_ref: str, ref: str | None) -> None:
        """The channel stopped after a ``phx_leave``: reply ok, then ``phx_close``."""
        if self._current(topic, join_ref) is not None:
            del self._channels[topic]
        self._reply(join_ref, ref, topic, "ok", {})
        self._frames.append(codec.encode_channel_exit(join_ref, topic, codec.PHX_CLOSE, {}))

    def channel_closed(
        self, topic: str, join_ref: str, reply: tuple[str | None, str, Payload] | None = None
    ) -> None:
        """The channel stopped normally: optional final reply, then ``phx_close``."""
        if self._current(topic, join_ref) is None:
            return
        del self._channels[topic]
        if reply is not None:
            ref, status, response = reply
            self._reply(join_ref, ref, topic, status, response)
        self._frames.append(codec.encode_channel_exit(join_ref, topic, codec.PHX_CLOSE, {}))

    def channel_crashed(self, topic: str, join_ref: str) -> None:
        """The channel raised: ``phx_error`` so the client rejoins it."""
        if self._current(topic, join_ref) is None:
            return
        del self._channels[topic]
        self._frames.append(
            codec.encode_channel_exit(join_ref, topic, codec.PHX_ERROR, {"reason": "channel_crash"})
        )

    # -- output ----------------------------------------------------------------------------

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[Frame]:
        frames, self._frames = self._frames, []
        return frames

    def joined_topics(self) -> dict[str, str]:
        """Topic -> current join_ref, for every channel joined or joining."""
        return {topic: channel.join_ref for topic, channel in self._channels.items()}

    # -- helpers ---------------------------------------------------------------------------

    def _current(self, topic: str, join_ref: str) -> _Channel | None:
        channel = self._channels.get(topic)
        return channel if channel is not None and channel.join_ref == join_ref else None

    def _reply(
        self, join_ref: str | None, ref: str | None, topic: str, status: str, response: Payload
    ) -> bool:
        try:
            frame = codec.encode_reply(join_ref, ref, topic, status, response)
        except TypeError:  # a type JSON has not, or nesting deeper than orjson encodes (254)
            self._frames.append(codec.encode_reply(join_ref, ref, topic, "error", UNENCODABLE))
            return False
        self._frames.append(frame)
        return True

    def _close_replaced(self, topic: str) -> None:
        old_join_ref = self._closing.pop(topic, None)
        if old_join_ref is not None:
            self._frames.append(codec.encode_channel_exit(old_join_ref, topic, codec.PHX_CLOSE, {}))
