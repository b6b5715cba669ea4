"""Tests of server.outbox: direct writes, queueing behind a waiting write, overflow, errors,
finishing. Each runs twice: with only the ASGI ``send`` and with a ``try_write`` direct path."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from switchboard.server.codec import Frame
from switchboard.server.outbox import Outbox


class FakeTransport:
    """A ``send`` coroutine that writes at once, or waits while ``stalled`` is set; and, if
    ``direct``, a ``try_write`` that writes at once unless stalled."""

    def __init__(self, direct: bool) -> None:
        self.direct = direct
        self.written: list[Frame] = []
        self.stalled = False
        self.fail_with: Exception | None = None
        self._released: asyncio.Event | None = None

    async def send(self, frame: Frame) -> None:
        if self.fail_with is not None and not self.stalled:
            raise self.fail_with
        if self.stalled:
            if self._released is None:
                self._released = asyncio.Event()
            await self._released.wait()
            if self.fail_with is not None:
                raise self.fail_with
        self.written.append(frame)

    def try_write(self, frame: Frame) -> bool:
        if self.stalled:
            return False
        if self.fail_with is not None:
            raise self.fail_with
        self.written.append(frame)
        return True

    def stall(self) -> None:
        self.stalled = True
        self._released = None

    def release(self) -> None:
        self.stalled = False
        if self._released is not None:
            self._released.set()


class Recorder:
    def __init__(self) -> None:
        self.overflows = 0
        self.errors: list[BaseException] = []

    def overflow(self) -> None:
        self.overflows += 1

    def error(self, exc: BaseException) -> None:
        self.errors.append(exc)


@pytest.fixture(params=[False, True], ids=["asgi-send", "direct-write"])
def direct(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def run(scenario: Callable[[FakeTransport, Recorder], Awaitable[None]], direct: bool) -> None:
    async def main() -> None:
        await asyncio.wait_for(scenario(FakeTransport(direct), Recorder()), 5)

    asyncio.run(main())


def outbox(transport: FakeTransport, recorder: Recorder, limit: int = 100) -> Outbox:
    try_write = transport.try_write if transport.direct else None
    return Outbox(transport.send, limit, recorder.overflow, recorder.error, try_write)


def held(transport: FakeTransport, frame: Frame) -> int:
    """What the first frame that must wait counts against the limit: nothing on the ASGI
    path (it is in flight, inside ``send``), its size on the direct path (it is queued)."""
    return len(frame) if transport.direct else 0


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0)


def test_frames_are_written_at_once_while_the_transport_keeps_up(direct: bool) -> None:
    async def scenario(transport: FakeTransport, recorder: Recorder) -> None:
        box = outbox(transport, recorder)
        box.put("a")
        assert transport.written == ["a"]  # before any await: no task, no queue
        box.put(b"b")
        assert transport.written == ["a", b"b"]
        assert box.queued_bytes == 0

    run(scenario, direct)


def test_frames_queue_behind_a_waiting_write_and_go_out_in_order(direct: bool) -> None:
    async def scenario(transport: FakeTransport, recorder: Recorder) -> None:
        box = outbox(transport, recorder)
        transport.stall()
        box.put("first")
        box.put("second")
        box.put(b"third")
        assert transport.written == []
        assert box.queued_bytes == held(transport, "first") + len("second") + len(b"third")
        transport.release()
        await until(lambda: len(transport.written) == 3)
        assert transport.written == ["first", "second", b"third"]
        assert box.queued_bytes == 0
        box.put("fourth")
        assert transport.written[-1] == "fourth"  # direct again once drained
        assert recorder.overflows == 0 and recorder.errors == []

    run(scenario, direct)


def test_frames_put_while_the_queue_drains_keep_their_order(direct: bool) -> None:
    async def scenario(transport: FakeTransport, recorder: Recorder) -> None:
        box = outbox(transport, recorder, limit=1000)
        transport.stall()
        for n in range(5):
            box.put(f"f{n}")
        transport.release()
        await asyncio.sleep(0)
        for n in range(5, 10):
            box.put(f"f{n}")
        await until(lambda: len(transport.written) == 10)
        assert transport.written == [f"f{n}" for n in range(10)]

    run(scenario, direct)


def test_going_over_the_limit_drops_the_queue_and_reports_overflow_once(direct: bool) -> None:
    async def scenario(transport: FakeTransport, recorder: Recorder) -> None:
        box = outbox(transport, recorder, limit=10 + held(transport, "in flight"))
        transport.stall()
        box.put("in flight")
        box.put("x" * 6)
        assert recorder.overflows == 0
        box.put("y" * 5)  # 11 bytes queued > 10
        assert recorder.overflows == 1
        assert box.closed and box.queued_bytes == 0
        box.put("z")
        box.put("z" * 50)
        assert recorder.overflows == 1
        transport.release()
        await asyncio.sleep(0.01)
        assert transport.written == []  # the waiting write was abandoned too
        assert recorder.errors == []

    run(scenario, direct)


def test_a_queue_exactly_at_the_limit_is_kept(direct: bool) -> None:
    async def scenario(transport: FakeTransport, recorder: Recorder) -> None:
        box = outbox(transport, recorder, limit=10 + held(transport, "in flight"))
        transport.stall()
        box.put("in flight")
        box.put("x" * 10)
        assert recorder.overflows == 0 and box.queued_bytes == box.limit
        transport.release()
        await until(lambda: len(transport.written) == 2)

    run(scenario, direct)


def test_a_send_that_fails_at_once_reports_the_error_and_closes(direct: bool) -> None:
    async def scenario(transport: FakeTransport, recorder: Recorder) -> None:
        box = outbox(transport, recorder)
        transport.fail_with = ConnectionResetError("gone")
        box.put("a")  # must not raise
        assert [str(e) for e in recorder.errors] == ["gone"]
        assert box.closed
        box.put("b")
        assert len(recorder.errors) == 1 and recorder.overflows == 0

    run(scenario, direct)


def test_a_send_that_fails_after_waiting_reports_the_error_and_drops_the_queue(
    direct: bool,
) -> None:
    async def scenario(transport: FakeTransport, recorder: Recorder) -> None:
        box = outbox(transport, recorder)
        transport.stall()
        box.put("a")
        box.put("b")
        transport.fail_with = ConnectionResetError("gone")
        transport.release()
        await until(lambda: bool(recorder.errors))
        await asyncio.sleep(0)
        assert [type(e) for e in recorder.errors] == [ConnectionResetError]
        assert box.closed and box.queued_bytes == 0
        assert transport.written == []

    run(scenario, direct)


def test_closing_drops_queued_frames_and_ignores_later_ones(direct: bool) -> None:
    async def scenario(transport: FakeTransport, recorder: Recorder) -> None:
        box = outbox(transport, recorder)
        transport.stall()
        box.put("a")
        box.put("b")
        box.close()
        box.close()
        transport.release()
        await asyncio.sleep(0.01)
        box.put("c")
        assert transport.written == []
        assert recorder.overflows == 0 and recorder.errors == []

    run(scenario, direct)


@pytest.mark.parametrize("frame", ["x" * 8, b"\x00" * 8])
def test_queued_bytes_count_the_length_of_each_frame(frame: Frame, direct: bool) -> None:
    async def scenario(transport: FakeTransport, recorder: Recorder) -> None:
        box = outbox(transport, recorder)
        transport.stall()
        box.put("in flight")
        box.put(frame)
        assert box.queued_bytes == held(transport, "in flight") + len(frame)
        transport.release()
        await until(lambda: len(transport.written) == 2)

    run(scenario, direct)


def test_finishing_sends_what_is_queued_and_takes_nothing_more(direct: bool) -> None:
    async def scenario(transport: FakeTransport, recorder: Recorder) -> None:
        box = outbox(transport, recorder)
        transport.stall()
        box.put("a")
        box.put("b")
        writer = box.finish()
        assert writer is not None
        box.put("late")
        transport.release()
        await writer
        assert transport.written == ["a", "b"]
        assert recorder.overflows == 0 and recorder.errors == []

    run(scenario, direct)


def test_finishing_with_nothing_queued_has_nothing_to_wait_for(direct: bool) -> None:
    async def scenario(transport: FakeTransport, recorder: Recorder) -> None:
        box = outbox(transport, recorder)
        box.put("a")
        assert box.finish() is None
        box.put("late")
        assert transport.written == ["a"]

    run(scenario, direct)


def test_closing_after_finishing_drops_what_is_still_queued(direct: bool) -> None:
    async def scenario(transport: FakeTransport, recorder: Recorder) -> None:
        box = outbox(transport, recorder)
        transport.stall()
        box.put("a")
        box.put("b")
        writer = box.finish()
        box.close()
        transport.release()
        assert writer is not None
        await asyncio.wait([writer])
        assert transport.written == []

    run(scenario, direct)
