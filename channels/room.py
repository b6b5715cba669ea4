"""The demo ``room:*`` channel (tests and benchmarks rely on exactly this behaviour).

- join replies ok ``{"position": ..., "recovered": ...}`` (history, below);
  ``room:forbidden`` is refused with ``{"reason": "unauthorized"}``
- ``ping`` replies ok with the pushed payload (binary in, binary out)
- ``shout`` broadcasts ``shout`` with the payload to every member, sender included
- ``shout_from`` does the same without the sender
- a JSON shout carries ``user``: the sender's authenticated user id, stamped by the server over
  whatever the client put there (everything else arrives as sent); a binary shout has no
  fields to stamp and goes out as sent
- history: broadcasts are kept, carry their position as ``ref``, and a join with
  ``{"since": position}`` recovers what came after it (see :class:`Channel`)
- presence: each member is tracked under its user id with ``online_at`` (Unix time in ms, a
  number like JavaScript's ``Date.now()``); after joining, the client gets ``presence_state``
  and then ``presence_diff`` broadcasts (phoenix.js ``Presence``)
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from switchboard.actors.errors import ActorError
from switchboard.channels.channel import NOREPLY, Channel, error, ok

logger = logging.getLogger("switchboard.room")

UNAUTHORIZED = {"reason": "unauthorized"}
AFTER_JOIN = "after_join"
PUSH_STATE = "push_presence_state"


class RoomChannel(Channel):
    history = True

    def join(self, payload: Any) -> Any:
        if self.topic == "room:forbidden":
            return error(UNAUTHORIZED)
        self.send_info(AFTER_JOIN)  # runs once the join reply is out, as in Phoenix
        return ok()

    async def handle_info(self, message: Any) -> Any:
        if message == AFTER_JOIN:
            user = self.socket.assigns["user_id"]
            try:
                # A timed-out track still lands (and is announced) once presence answers.
                await self.track(user, {"online_at": int(time.time() * 1000)})
            except ActorError as exc:
                logger.warning("tracking %s in %s delayed: %s", user, self.topic, exc)
            self.send_info((PUSH_STATE, 0))
        elif isinstance(message, tuple) and message[0] == PUSH_STATE:
            try:
                await self.push_presence_state()
            except ActorError as exc:
                # phoenix.js holds diffs until a state arrives: keep trying, backing off.
                delay = min(5.0, 0.25 * 2 ** message[1])
                logger.warning("presence_state for %s delayed %.2fs: %s", self.topic, delay, exc)
                retry = (PUSH_STATE, message[1] + 1)
                asyncio.get_running_loop().call_later(delay, self.send_info, retry)
        return NOREPLY

    def handle_in(self, event: str, payload: Any) -> Any:
        if event == "ping":
            return ok(payload)
        if event in ("shout", "shout_from"):
            if isinstance(payload, dict):  # binary has no fields to stamp
                # Who sent it is the server's word, not the client's: nobody speaks as another.
                payload = {**payload, "user": self.socket.assigns.get("user_id")}
            if event == "shout":
                self.broadcast("shout", payload)
            else:
                self.broadcast_from("shout", payload)
            return NOREPLY
        return error({"reason": f"unknown event {event!r}"})


class SecretChannel(Channel):
    """``secret:*`` topics exist but nobody may join them."""

    def join(self, payload: Any) -> Any:
        return error(UNAUTHORIZED)
