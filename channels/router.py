"""Routes topics to channel classes: exact topics, or ``prefix*`` patterns."""

from __future__ import annotations

from collections.abc import Mapping

from switchboard.channels.channel import Channel


class Router:
    def __init__(self) -> None:
        self._exact: dict[str, type[Channel]] = {}
        self._prefixes: list[tuple[str, type[Channel]]] = []

    @classmethod
    def of(cls, channels: Mapping[str, type[Channel]]) -> Router:
        """A router for a socket's ``channels``: topic pattern -> channel class."""
        router = cls()
        for pattern, channel in channels.items():
            router.channel(pattern, channel)
        return router

    def channel(self, pattern: str, channel: type[Channel]) -> Router:
        """Route ``pattern`` (``room:lobby`` or ``room:*``) to ``channel``; returns self."""
        if not pattern:
            raise ValueError("a topic pattern must not be empty")
        if not (isinstance(channel, type) and issubclass(channel, Channel)):
            raise TypeError(f"{channel!r} is not a Channel subclass")
        if pattern.endswith("*"):
            if "*" in pattern[:-1]:
                raise ValueError(f"only a trailing * is supported in {pattern!r}")
            self._prefixes.append((pattern[:-1], channel))
            self._prefixes.sort(key=lambda item: -len(item[0]))  # most specific prefix wins
        elif "*" in pattern:
            raise ValueError(f"only a trailing * is supported in {pattern!r}")
        else:
            self._exact[pattern] = channel
        return self

    def match(self, topic: str) -> type[Channel] | None:
        found = self._exact.get(topic)
        if found is not None:
            return found
        for prefix, channel in self._prefixes:
            if topic.startswith(prefix):
                return channel
        return None

    def matches(self, topic: str) -> bool:
        return self.match(topic) is not None
