"""The demo ``room:*`` channel (tests and benchmarks rely on exactly this behaviour).

- join replies ok ``{}``; ``room:forbidden`` is refused with ``{"reason": "unauthorized"}``
- ``ping`` replies ok with the pushed payload (binary in, binary out)
- ``shout`` broadcasts ``shout`` with the payload to every member, sender included
- ``shout_from`` does the same without the sender
- presence: each member is tracked under its user id with ``online_at``; after joining, the
  client gets ``presence_state`` and then ``presence_diff`` broadcasts (phoenix.js ``Presence``)
"""

from __future__ import annotations

import logging
import time
from typing import Any

from actors.errors import ActorError
from channels.channel import NOREPLY, Channel, error, ok

logger = logging.getLogger("switchboard.room")

UNAUTHORIZED = {"reason": "unauthorized"}
AFTER_JOIN = "after_join"


class RoomChannel(Channel):
    def join(self, payload: Any) -> Any:
        if self.topic == "room:forbidden":
            return error(UNAUTHORIZED)
        if self.endpoint.presence is not None and self.endpoint.settings.presence:
            self.send_info(AFTER_JOIN)  # runs once the join reply is out, as in Phoenix
        return ok()

    async def handle_info(self, message: Any) -> Any:
        if message == AFTER_JOIN:
            try:
                await self.track(self.socket.user_id, {"online_at": str(int(time.time()))})
                await self.push_presence_state()
            except ActorError as exc:
                logger.warning(
                    "presence for %s in %s unavailable: %s", self.socket.user_id, self.topic, exc
                )
        return NOREPLY

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
