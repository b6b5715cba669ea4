"""The demo ``room:*`` channel (tests and benchmarks rely on exactly this behaviour).

- join replies ok ``{}``; ``room:forbidden`` is refused with ``{"reason": "unauthorized"}``
- ``ping`` replies ok with the pushed payload (binary in, binary out)
- ``shout`` broadcasts ``shout`` with the payload to every member, sender included
- ``shout_from`` does the same without the sender
"""

from __future__ import annotations

from typing import Any

from channels.channel import NOREPLY, Channel, error, ok

UNAUTHORIZED = {"reason": "unauthorized"}


class RoomChannel(Channel):
    def join(self, payload: Any) -> Any:
        if self.topic == "room:forbidden":
            return error(UNAUTHORIZED)
        return ok()

    def handle_in(self, event: str, payload: Any) -> Any:
        if event == "ping":
            return ok(payload)
        if event == "shout":
            self.broadcast("shout", payload)
            return NOREPLY
        if event == "shout_from":
            self.broadcast_from("shout", payload)
            return NOREPLY
        return error({"reason": f"unknown event {event!r}"})


class SecretChannel(Channel):
    """``secret:*`` topics exist but nobody may join them."""

    def join(self, payload: Any) -> Any:
        return error(UNAUTHORIZED)
