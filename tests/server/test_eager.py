"""Tests of server.eager: run a coroutine inline until it first suspends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchboard.server import eager


def test_a_coroutine_that_never_suspends_finishes_inline() -> None:
    done: list[str] = []

    async def quick() -> int:
        done.append("ran")
        return 42

    assert eager.start(quick()) is None
    assert done == ["ran"]


def test_a_coroutine_awaiting_only_non_suspending_coroutines_finishes_inline() -> None:
    async def inner(n: int) -> int:
        return n * 2

    async def outer(log: list[int]) -> None:
        log.append(await inner(1) + await inner(2))

    log: list[int] = []
    assert eager.start(outer(log)) is None
    assert log == [6]


def test_an_exception_before_the_first_suspension_reaches_the_caller() -> None:
    async def broken() -> None:
        raise ValueError("at once")

    with pytest.raises(ValueError, match="at once"):
        eager.start(broken())


def test_a_suspended_coroutine_resumes_in_a_task_with_results_sent_in() -> None:
    log: list[Any] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()

        async def work() -> str:
            log.append("before")
            value = await future
            log.append(value)
            await asyncio.sleep(0)
            await asyncio.sleep(0.001)
            log.append("after")
            return "result"

        rest = eager.start(work())
        assert rest is not None
        assert log == ["before"]  # ran inline up to the suspension
        task = loop.create_task(_await(rest))
        await asyncio.sleep(0)
        assert log == ["before"]
        future.set_result("sent in")
        assert await asyncio.wait_for(task, 2) == "result"

    asyncio.run(scenario())
    assert log == ["before", "sent in", "after"]


def test_an_exception_after_the_suspension_comes_out_of_the_task() -> None:
    async def scenario() -> None:
        async def work() -> None:
            await asyncio.sleep(0)
            raise KeyError("later")

        rest = eager.start(work())
        assert rest is not None
        with pytest.raises(KeyError, match="later"):
            await asyncio.wait_for(_await(rest), 2)

    asyncio.run(scenario())


def test_an_exception_set_on_the_awaited_future_is_raised_inside_the_coroutine() -> None:
    caught: list[BaseException] = []

    async def scenario() -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def work() -> str:
            try:
                await future
            except RuntimeError as exc:
                caught.append(exc)
                return "handled"
            return "not reached"

        rest = eager.start(work())
        assert rest is not None
        task = asyncio.get_running_loop().create_task(_await(rest))
        future.set_exception(RuntimeError("boom"))
        assert await asyncio.wait_for(task, 2) == "handled"

    asyncio.run(scenario())
    assert [str(exc) for exc in caught] == ["boom"]


def test_cancelling_the_task_cancels_the_coroutine_and_runs_its_cleanup() -> None:
    log: list[str] = []

    async def scenario() -> None:
        async def work() -> None:
            try:
                await asyncio.sleep(10)
            finally:
                log.append("cleaned up")

        rest = eager.start(work())
        assert rest is not None
        task = asyncio.get_running_loop().create_task(_await(rest))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    asyncio.run(scenario())
    assert log == ["cleaned up"]


def test_a_coroutine_may_handle_its_cancellation_and_return_a_value() -> None:
    async def scenario() -> None:
        async def work() -> str:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await asyncio.sleep(0)  # still able to suspend while handling it
                return "stopped cleanly"
            return "slept"

        rest = eager.start(work())
        assert rest is not None
        task = asyncio.get_running_loop().create_task(_await(rest))
        await asyncio.sleep(0)
        task.cancel()
        assert await asyncio.wait_for(task, 2) == "stopped cleanly"

    asyncio.run(scenario())


def test_closing_the_remainder_runs_cleanup_without_a_never_awaited_warning() -> None:
    log: list[str] = []

    async def scenario() -> None:
        async def work() -> None:
            try:
                await asyncio.sleep(10)
                log.append("not reached")
            finally:
                log.append("closed")

        rest = eager.start(work())
        assert rest is not None
        rest.close()

    asyncio.run(scenario())  # warnings are errors in this suite
    assert log == ["closed"]


async def _await(rest: eager.Resumed) -> Any:
    return await rest
