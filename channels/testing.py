"""``test:*``: a channel the client test suites drive to make the server misbehave on cue.

Routed only in the ``test`` profile. Events:

- ``crash``: the hook raises, so the client gets ``phx_error`` and rejoins
- ``crash_join`` as a join param ``{"crash": true}``: join raises (``join crashed``)
- ``stop``: the channel stops normally, replying ok first, so the client gets ``phx_close``
- ``kick``: a ``disconnect`` broadcast on this socket's id topic closes the socket (1001)
- ``sleep``: waits ``payload["ms"]`` before replying ok (a slow hook)
- ``push``: pushes ``payload`` back as event ``pushed`` (direct push, with the join_ref)
- ``ping``: replies ok with the payload
- ``presence_list``: replies with the presence list of ``payload["topic"]`` (asks the actor;
  a slow or dead actor gives an error reply ``timeout``/``unavailable``)
"""

from __future__ import annotations

import asyncio
from typing import Any

from switchboard.channels.channel import NOREPLY, Channel, Stop, error, ok


class TestChannel(Channel):
    __test__ = False  # not a pytest test class

    def join(self, payload: Any) -> Any:
        if isinstance(payload, dict) and payload.get("crash"):
            raise RuntimeError("join crashed on request")
        return ok({"join_ref": self.join_ref})

    async def handle_in(self, event: str, payload: Any) -> Any:
        if event == "ping":
            return ok(payload)
        if event == "crash":
            raise RuntimeError("crashed on request")
        if event == "stop":
            return Stop("normal", ok({"stopping": True}))
        if event == "kick":
            if self.socket.id is not None:
                self.broadcast_to(self.socket.id, "disconnect", {})
            return NOREPLY
        if event == "sleep":
            await asyncio.sleep(float(payload.get("ms", 100)) / 1000)
            return ok(payload)
        if event == "presence_list":
            return ok(await self.presence_list(payload.get("topic", self.topic)))
        if event == "push":
            self.push("pushed", payload)
            return NOREPLY
        return error({"reason": f"unknown event {event!r}"})
