"""A bounded outbound queue per connection that writes directly while it can.

A frame is written at once when nothing is queued and the transport accepts it without
waiting (through ``try_write`` where the transport offers one, else by running the ASGI
send inline until it would wait). Once a write has to wait (the client reads slower than
we send), a writer task takes over and later frames queue behind it, up to ``limit``
bytes. Past the limit the connection is given up (``on_overflow``): a slow client never
delays the other subscribers of a broadcast and never makes the server's memory grow
without bound.

Two ways to stop: :meth:`finish` takes no more frames but lets the queued ones go out (a
graceful close sends its close frame after them); :meth:`close` drops them (overflow,
a failed write).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from switchboard.server import eager
from switchboard.server.codec import Frame

logger = logging.getLogger("switchboard.outbox")

SendFunction = Callable[[Frame], Coroutine[Any, Any, None]]


class Outbox:
    __slots__ = (
        "_send",
        "limit",
        "_on_overflow",
        "_on_error",
        "_try_write",
        "_queue",
        "_queued_bytes",
        "_writer",
        "closed",
        "frames",
    )

    def __init__(
        self,
        send: SendFunction,
        limit: int,
        on_overflow: Callable[[], None],
        on_error: Callable[[BaseException], None],
        try_write: Callable[[Frame], bool] | None = None,
    ) -> None:
        self._send = send
        self._try_write = try_write
        self.limit = limit
        self._on_overflow = on_overflow
        self._on_error = on_error
        self._queue: deque[Frame] | None = None  # made on first use: an empty deque is ~600 B
        self._queued_bytes = 0
        self._writer: asyncio.Task[None] | None = None
        self.closed = False
        self.frames = 0  # frames handed to this outbox, for the console

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def put(self, frame: Frame) -> None:
        """Write ``frame`` now if possible, else queue it; never blocks, never raises."""
        if self.closed:
            return
        self.frames += 1
        if self._writer is None:
            try:
                if self._try_write is not None:
                    if self._try_write(frame):
                        return
                    rest = None  # not writable now: queue it behind a writer that waits
                else:
                    rest = eager.start(self._send(frame))
                    if rest is None:
                        return
            except Exception as exc:
                self._fail(exc)
                return
            if rest is None:
                self._enqueue(frame)
            self._writer = asyncio.get_running_loop().create_task(self._drain(rest))
            return
        size = len(frame)
        if self._queued_bytes + size > self.limit:
            self.close()
            self._on_overflow()
            return
        self._enqueue(frame)

    def _enqueue(self, frame: Frame) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append(frame)
        self._queued_bytes += len(frame)

    async def _drain(self, first: eager.Resumed | None) -> None:
        try:
            if first is not None:
                await first
            queue = self._queue
            while queue:  # None (nothing was queued) is falsy too; close() empties it
                frame = queue.popleft()
                self._queued_bytes -= len(frame)
                await self._send(frame)
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            self._fail(exc)
        finally:
            self._writer = None

    def finish(self) -> asyncio.Task[None] | None:
        """Take no more frames; those already queued still go out. Returns the task still
        writing them, if any (the caller sends its close frame once it is done)."""
        self.closed = True
        return self._writer

    def close(self) -> None:
        """Drop what is queued and stop writing; the caller closes the connection."""
        self.closed = True
        if self._queue is not None:
            self._queue.clear()
        self._queued_bytes = 0
        if self._writer is not None:
            self._writer.cancel()

    def _fail(self, exc: BaseException) -> None:
        self.close()
        self._on_error(exc)
