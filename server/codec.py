"""Phoenix V2 frame codec: text (JSON arrays) and binary (kinds 0, 1, 2).

Pure functions, no I/O. Inbound frames decode to a :class:`Message`; outbound frames are
built by ``encode_*`` and returned as ``str`` (text) or ``bytes`` (binary). A broadcast is
encoded here once and the same object is written to every subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from switchboard.server.errors import FrameTooLarge, MalformedFrame

# Reserved events, as Phoenix names them.
PHX_JOIN = "phx_join"
PHX_LEAVE = "phx_leave"
PHX_REPLY = "phx_reply"
PHX_ERROR = "phx_error"
PHX_CLOSE = "phx_close"
HEARTBEAT = "heartbeat"
PHOENIX_TOPIC = "phoenix"

PUSH, REPLY, BROADCAST = 0, 1, 2

#: Events an application may not broadcast: the protocol's and presence's own.
RESERVED_EVENTS = frozenset(
    {PHX_JOIN, PHX_LEAVE, PHX_REPLY, PHX_ERROR, PHX_CLOSE, HEARTBEAT}
    | {"presence_state", "presence_diff"}
)
#: Topics the nodes use among themselves (presence replication, cache, stats) and the admin
#: dashboard's: what arrives there is trusted as coming from a node.
INTERNAL_TOPIC_PREFIXES = ("switchboard:", "admin:")

Payload = dict[str, Any] | bytes
Frame = str | bytes


@dataclass(frozen=True, slots=True)
class Message:
    """A frame from the client. ``payload`` is bytes for binary pushes, else a JSON object."""

    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: Any


def decode(data: Frame, max_size: int) -> Message:
    """Decode one client frame, raising :class:`MalformedFrame` or :class:`FrameTooLarge`."""
    size = len(data)
    if type(data) is str and size * 4 > max_size and size <= max_size:
        size = len(data.encode())  # only strings near the limit need measuring in bytes
    if size > max_size:
        raise FrameTooLarge(f"frame of {size} bytes exceeds the maximum of {max_size}")
    if isinstance(data, bytes):
        return _decode_binary(data)
    try:
        decoded = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise MalformedFrame("frame is not valid JSON") from None
    if not isinstance(decoded, list) or len(decoded) != 5:
        raise MalformedFrame("frame must be a JSON array [join_ref, ref, topic, event, payload]")
    join_ref, ref, topic, event, payload = decoded
    if not (join_ref is None or isinstance(join_ref, str)):
        raise MalformedFrame("join_ref must be a string or null")
    if not (ref is None or isinstance(ref, str)):
        raise MalformedFrame("ref must be a string or null")
    if not isinstance(topic, str) or not topic:
        raise MalformedFrame("topic must be a non-empty string")
    if not isinstance(event, str) or not event:
        raise MalformedFrame("event must be a non-empty string")
    return Message(join_ref, ref, topic, event, payload)


def _decode_binary(data: bytes) -> Message:
    if len(data) < 5:
        raise MalformedFrame("binary frame is shorter than its header")
    if data[0] != PUSH:
        raise MalformedFrame(f"binary frame kind {data[0]} is not a push (0)")
    jr_len, ref_len, topic_len, event_len = data[1], data[2], data[3], data[4]
    start = 5
    end = start + jr_len + ref_len + topic_len + event_len
    if end > len(data):
        raise MalformedFrame("binary frame header lengths exceed the frame")
    try:
        join_ref = data[start : start + jr_len].decode()
        start += jr_len
        ref = data[start : start + ref_len].decode()
        start += ref_len
        topic = data[start : start + topic_len].decode()
        start += topic_len
        event = data[start : start + event_len].decode()
    except UnicodeDecodeError:
        raise MalformedFrame("binary frame header is not UTF-8") from None
    if not topic or not event:
        raise MalformedFrame("binary frame needs a topic and an event")
    return Message(join_ref or None, ref or None, topic, event, data[end:])


def _field(value: str | None) -> bytes:
    encoded = (value or "").encode()
    if len(encoded) > 255:
        raise ValueError(f"binary frame fields are limited to 255 bytes, got {len(encoded)}")
    return encoded


def encode_push(
    join_ref: str | None, topic: str, event: str, payload: Payload, ref: str | None = None
) -> Frame:
    """A push to one client: ``[join_ref, ref, topic, event, payload]`` or binary kind 0.

    ``ref`` is null but for a broadcast's position passed on by ``handle_out`` (a binary
    push has no field for it)."""
    if isinstance(payload, bytes):
        jr, t, e = _field(join_ref), _field(topic), _field(event)
        return bytes((PUSH, len(jr), len(t), len(e))) + jr + t + e + payload
    return orjson.dumps([join_ref, ref, topic, event, payload]).decode()


def encode_channel_exit(join_ref: str, topic: str, event: str, payload: dict[str, Any]) -> str:
    """``phx_close``/``phx_error`` of a channel: ref and join_ref are both its join_ref."""
    return orjson.dumps([join_ref, join_ref, topic, event, payload]).decode()


def encode_push_json(join_ref: str | None, topic: str, event: str, payload_json: str) -> str:
    """A push whose payload is already JSON text (a cached ``presence_state``, say)."""
    head = orjson.dumps([join_ref, None, topic, event]).decode()
    return f"{head[:-1]},{payload_json}]"


def encode_reply(
    join_ref: str | None, ref: str | None, topic: str, status: str, response: Payload
) -> Frame:
    """A reply to a push; binary responses use kind 1 so the client gets an ArrayBuffer."""
    if isinstance(response, bytes):
        jr, r, t, s = _field(join_ref), _field(ref), _field(topic), _field(status)
        header = bytes((REPLY, len(jr), len(r), len(t), len(s)))
        return header + jr + r + t + s + response
    body = {"status": status, "response": response}
    return orjson.dumps([join_ref, ref, topic, PHX_REPLY, body]).decode()


def encode_broadcast(topic: str, event: str, payload: Payload) -> Frame:
    """A broadcast, encoded once for all subscribers: ``[null, null, topic, event, payload]``."""
    if isinstance(payload, bytes):
        t, e = _field(topic), _field(event)
        return bytes((BROADCAST, len(t), len(e))) + t + e + payload
    return orjson.dumps([None, None, topic, event, payload]).decode()


def broadcast_problems(topic: object, event: object, payload: object) -> list[str]:
    """What is wrong with an application broadcast from outside a channel (HTTP API,
    emitters); empty if nothing is."""
    problems = []
    if not isinstance(topic, str) or not 0 < len(topic.encode()) <= 255:
        problems.append("topic must be a string of 1 to 255 bytes")
    elif topic.startswith(INTERNAL_TOPIC_PREFIXES):
        problems.append(f"topic {topic!r} is internal to the nodes")
    if not isinstance(event, str) or not 0 < len(event.encode()) <= 255:
        problems.append("event must be a string of 1 to 255 bytes")
    elif event in RESERVED_EVENTS:
        problems.append(f"event {event!r} is reserved by the protocol")
    if not isinstance(payload, dict | bytes):
        problems.append("payload must be a JSON object (or bytes)")
    return problems


#: How every text broadcast frame starts (no join_ref, no ref).
BROADCAST_HEAD = "[null,null,"


def with_ref(frame: str, ref: str) -> str:
    """A text broadcast frame with ``ref`` (a history position) as its ref:
    ``[null, "<ref>", topic, event, payload]``. ``ref`` must need no JSON escaping."""
    return f'[null,"{ref}",{frame[len(BROADCAST_HEAD) :]}'


def broadcast_ref(frame: Frame) -> str | None:
    """The ref (a history position) of a text broadcast frame made by :func:`with_ref`."""
    if isinstance(frame, str) and frame.startswith('[null,"'):
        return frame[7 : frame.index('"', 7)]
    return None


def decode_broadcast(frame: Frame) -> tuple[str, str, Payload]:
    """Inverse of :func:`encode_broadcast`, for intercepting channels and remote nodes."""
    if isinstance(frame, bytes):
        topic_len, event_len = frame[1], frame[2]
        topic = frame[3 : 3 + topic_len].decode()
        event = frame[3 + topic_len : 3 + topic_len + event_len].decode()
        return topic, event, frame[3 + topic_len + event_len :]
    _, _, topic, event, payload = orjson.loads(frame)
    return topic, event, payload
