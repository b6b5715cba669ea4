"""Taps: the console watching a topic's traffic, on demand.

Opening a topic in the console subscribes a tap to it on the node that answered (every
broadcast on the topic reaches every node subscribed to it, so one tap sees the cluster's
traffic). A tap keeps the last :data:`KEEP` frames as they were sent; nothing is kept for
topics nobody watches. Taps nobody has read for :data:`IDLE` seconds close themselves, and
a node runs at most :data:`MAX_TAPS`. Taps are not subscribers of the app: the console's
topic counts leave them out.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import orjson

from switchboard.server.codec import Frame, decode_broadcast
from switchboard.server.pubsub import PubSub

KEEP = 50
IDLE = 60.0
MAX_TAPS = 20
PREVIEW = 2048  # characters of a payload shown


class Tap:
    __slots__ = ("topic", "recent", "seen", "opened_at", "read_at")

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.recent: deque[tuple[float, str, Frame]] = deque(maxlen=KEEP)
        self.seen = 0
        self.opened_at = time.time()
        self.read_at = time.monotonic()

    def deliver(self, event: str, frame: Frame) -> None:
        self.recent.append((time.time(), event, frame))
        self.seen += 1

    def messages(self) -> list[dict[str, Any]]:
        """The kept frames, newest last: time, event and a preview of the payload."""
        out = []
        for at, event, frame in self.recent:
            if isinstance(frame, bytes):
                preview = f"<{len(frame)} bytes>"
                try:
                    _, _, payload = decode_broadcast(frame)
                    preview = (
                        f"<binary, {len(payload)} bytes>" if isinstance(payload, bytes) else preview
                    )
                except Exception:
                    pass
            else:
                try:
                    payload = orjson.loads(frame)[4]
                    preview = orjson.dumps(payload).decode()
                except (orjson.JSONDecodeError, IndexError, TypeError):
                    preview = frame
            if len(preview) > PREVIEW:
                preview = preview[:PREVIEW] + "…"
            out.append({"at": at, "event": event, "payload": preview})
        return out


class Taps:
    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub
        self._taps: dict[str, Tap] = {}

    def open(self, topic: str) -> Tap | None:
        """The tap on ``topic`` (opened now if there was none); None if too many are open."""
        self.close_idle()
        tap = self._taps.get(topic)
        if tap is None:
            if len(self._taps) >= MAX_TAPS:
                return None
            tap = self._taps[topic] = Tap(topic)
            self.pubsub.subscribe(topic, tap)
        tap.read_at = time.monotonic()
        return tap

    def count(self, topic: str) -> int:
        """Taps subscribed to ``topic`` (0 or 1), to leave out of subscriber counts."""
        return 1 if topic in self._taps else 0

    def close_all(self) -> None:
        for topic, tap in list(self._taps.items()):
            self.pubsub.unsubscribe(topic, tap)
        self._taps.clear()

    def close_idle(self) -> None:
        deadline = time.monotonic() - IDLE
        for topic, tap in list(self._taps.items()):
            if tap.read_at < deadline:
                self.pubsub.unsubscribe(topic, tap)
                del self._taps[topic]
