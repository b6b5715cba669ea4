from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pykka
import pytest

from switchboard.actors import (
    ActorError,
    ActorTimeoutError,
    ActorUnavailableError,
    ChildSpec,
    InjectFault,
    SupervisedActor,
    ask,
    call,
    tell,
)


@dataclass(frozen=True)
class Hold:
    """Block the actor until ``release`` is set, then answer (or crash)."""

    release: threading.Event
    then_crash: bool = False


@dataclass(frozen=True)
class Sleep:
    seconds: float


class Echo(SupervisedActor):
    def on_receive(self, message: Any) -> Any:
        match message:
            case Hold(release=release, then_crash=then_crash):
                assert release.wait(5)
                if then_crash:
                    raise RuntimeError("crashed while holding")
                return "released"
            case Sleep(seconds=seconds):
                time.sleep(seconds)  # the slow handler under test
                return "slept"
            case ("fail", text):
                raise ValueError(text)
            case ("echo", value):
                return value
        return super().on_receive(message)

    def add(self, a: int, b: int = 0) -> int:
        return a + b


@pytest.fixture
def echo() -> Iterator[pykka.ActorRef[Any]]:
    ref = Echo.start()
    yield ref
    ref.stop()


async def max_loop_stall(until: asyncio.Future[Any], period: float = 0.005) -> float:
    """Tick every ``period`` until ``until`` is done; return the longest gap between ticks."""
    worst = 0.0
    last = time.monotonic()
    while not until.done():
        await asyncio.sleep(period)
        now = time.monotonic()
        worst = max(worst, now - last)
        last = now
    return worst


def test_ask_returns_the_actors_reply(echo):
    assert asyncio.run(ask(echo, ("echo", b"frame"))) == b"frame"


def test_the_loop_keeps_running_while_an_ask_is_pending(echo):
    # Event-driven proof: the actor only answers after the loop has ticked 100 times while
    # the ask was outstanding. If ask blocked the loop, the ticks could never happen first.
    release = threading.Event()

    async def main() -> tuple[int, str]:
        pending = asyncio.ensure_future(ask(echo, Hold(release), timeout=5))
        ticks = 0
        while ticks < 100:
            await asyncio.sleep(0)
            assert not pending.done()
            ticks += 1
        release.set()
        return ticks, await pending

    assert asyncio.run(main()) == (100, "released")


def test_the_loop_answers_within_milliseconds_while_an_actor_sleeps(echo):
    async def main() -> tuple[float, str]:
        pending = asyncio.ensure_future(ask(echo, Sleep(0.5), timeout=5))
        stall = await max_loop_stall(pending)
        return stall, await pending

    stall, reply = asyncio.run(main())
    assert reply == "slept"
    assert stall < 0.2  # a blocked loop would stall for the whole 0.5 s


def test_awaiting_a_pykka_future_directly_does_block_the_loop(echo):
    # The trap this module exists for: pykka's Future.__await__ calls the blocking get().
    async def main() -> float:
        done = asyncio.get_running_loop().create_future()
        watcher = asyncio.ensure_future(max_loop_stall(done))
        await asyncio.sleep(0.02)
        await echo.ask(Sleep(0.3), block=False)
        done.set_result(None)
        return await watcher

    assert asyncio.run(main()) >= 0.25


def test_a_slow_actor_raises_actor_timeout_error_quickly(echo):
    release = threading.Event()

    async def main() -> None:
        await ask(echo, Hold(release), timeout=0.1)

    started = time.monotonic()
    try:
        with pytest.raises(ActorTimeoutError, match="did not reply within 0.1s"):
            asyncio.run(main())
        assert time.monotonic() - started < 1.0
    finally:
        release.set()


def test_a_late_reply_after_a_timeout_is_dropped_quietly(echo, caplog):
    release = threading.Event()
    loop_errors: list[dict[str, Any]] = []

    async def main() -> Any:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
        with pytest.raises(ActorTimeoutError):
            await ask(echo, Hold(release), timeout=0.05)
        release.set()
        # Replies arrive in order, so once this one is here the late one has been handled.
        return await ask(echo, ("echo", "after"))

    assert asyncio.run(main()) == "after"
    assert loop_errors == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_reply_after_the_loop_has_closed_is_ignored(echo, caplog):
    release = threading.Event()

    async def main() -> None:
        await ask(echo, Hold(release), timeout=0.05)

    with pytest.raises(ActorTimeoutError):
        asyncio.run(main())
    release.set()

    assert echo.ask(("echo", "still alive"), timeout=2) == "still alive"
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_cancelled_ask_drops_its_reply_quietly(echo):
    release = threading.Event()
    loop_errors: list[dict[str, Any]] = []

    async def main() -> Any:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
        pending = asyncio.ensure_future(ask(echo, Hold(release), timeout=5))
        await asyncio.sleep(0)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        release.set()
        return await ask(echo, ("echo", "next"))

    assert asyncio.run(main()) == "next"
    assert loop_errors == []


def test_an_exception_raised_by_the_actor_is_reraised_as_is(echo):
    with pytest.raises(ValueError, match="bad input"):
        asyncio.run(ask(echo, ("fail", "bad input")))
    assert echo.is_alive()


def test_asking_a_stopped_actor_raises_actor_unavailable():
    ref = Echo.start()
    ref.stop()
    with pytest.raises(ActorUnavailableError, match="not running"):
        asyncio.run(ask(ref, ("echo", 1)))


def test_an_actor_that_dies_with_the_message_queued_raises_actor_unavailable():
    ref = Echo.start()
    release = threading.Event()
    ref.tell(Hold(release, then_crash=True))

    async def main() -> None:
        pending = asyncio.ensure_future(ask(ref, ("echo", 1), timeout=5))
        await asyncio.sleep(0)
        release.set()
        await pending

    with pytest.raises(ActorUnavailableError, match="stopped before replying"):
        asyncio.run(main())


def test_a_getter_is_called_on_every_ask_and_follows_restarts(supervise, events):
    supervisor = supervise([ChildSpec("echo", Echo.start)])

    async def main() -> list[Any]:
        target = lambda: supervisor.get("echo")  # noqa: E731
        first = await ask(target, ("echo", 1))
        tell(target, InjectFault())
        await asyncio.to_thread(events.wait_for, "restart", "echo")
        return [first, await ask(target, ("echo", 2))]

    assert asyncio.run(main()) == [1, 2]


def test_a_getter_that_reports_a_down_child_raises_actor_unavailable():
    def getter() -> pykka.ActorRef[Any]:
        raise ActorUnavailableError("cache is down and being restarted")

    with pytest.raises(ActorUnavailableError, match="being restarted"):
        asyncio.run(ask(getter, ("echo", 1)))


def test_call_invokes_an_actor_method_without_blocking(echo):
    assert asyncio.run(call(echo, "add", 1, b=2)) == 3


def test_call_of_a_missing_method_raises_attribute_error(echo):
    with pytest.raises(AttributeError):
        asyncio.run(call(echo, "no_such_method"))


def test_tell_delivers_and_reports_a_dead_actor_without_raising(caplog):
    caplog.set_level(logging.DEBUG, logger="switchboard.actors")
    ref = Echo.start()
    assert tell(ref, ("echo", 1)) is True
    ref.stop()

    assert tell(ref, ("echo", 2)) is False
    assert "dropped" in caplog.text


def test_every_bridge_error_derives_from_actor_error():
    assert issubclass(ActorTimeoutError, ActorError)
    assert issubclass(ActorUnavailableError, ActorError)
