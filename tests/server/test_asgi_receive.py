"""The ASGI receive loop (the fallback of the direct reader) takes turns with other sockets."""

from __future__ import annotations

import asyncio
from typing import Any

from switchboard.server.direct import BATCH
from switchboard.server.transport import _receive_through_asgi


class QueuedFrames:
    """What uvicorn's ``receive`` looks like after one big read: every frame is already
    queued, so awaiting the next one never suspends."""

    def __init__(self, count: int) -> None:
        self.messages: list[dict[str, Any]] = [
            {"type": "websocket.receive", "text": str(n)} for n in range(count)
        ]
        self.messages.append({"type": "websocket.disconnect", "code": 1000})

    async def receive(self) -> dict[str, Any]:
        return self.messages.pop(0)


class Recorder:
    def __init__(self) -> None:
        self.frames: list[Any] = []

    def receive(self, data: Any) -> None:
        self.frames.append(data)


def test_a_queued_burst_is_handled_a_batch_at_a_time_with_others_served_between() -> None:
    async def scenario() -> None:
        socket = Recorder()
        others: list[int] = []
        asyncio.get_running_loop().call_soon(lambda: others.append(len(socket.frames)))
        await _receive_through_asgi(QueuedFrames(3 * BATCH), socket)  # type: ignore[arg-type]
        assert others == [BATCH]
        assert socket.frames == [str(n) for n in range(3 * BATCH)]

    asyncio.run(asyncio.wait_for(scenario(), 5))
