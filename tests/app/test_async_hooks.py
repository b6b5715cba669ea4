"""An app's ``async def`` hooks run in a task of their own, as any asyncio code expects:
``asyncio.timeout``, ``TaskGroup`` and ``current_task()`` work in them, and a timeout that
fires in one fails that hook, not the socket it runs on."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import pytest

from switchboard.client import Client
from tests.support.processes import ServerProcess, running_server

APP = textwrap.dedent(
    """
    import asyncio

    from switchboard import Channel, Socket, error, ok

    class TimedChannel(Channel):
        async def join(self, payload):
            async with asyncio.timeout(1):
                await asyncio.sleep(0)
            return ok({"in_a_task": asyncio.current_task() is not None})

        async def handle_in(self, event, payload):
            if event == "gather":
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(asyncio.sleep(0, result=n)) for n in (1, 2, 3)]
                return ok({"sum": sum(task.result() for task in tasks)})
            if event == "too_slow":
                try:
                    async with asyncio.timeout(0.05):
                        await asyncio.sleep(5)
                except TimeoutError:
                    return error({"reason": "timed out"})
            if event == "plain":
                return ok({"in_a_task": asyncio.current_task() is not None})
            return error({"reason": "unknown"})

    class PlainChannel(Channel):
        def handle_in(self, event, payload):
            return ok(payload)

    class TimedSocket(Socket):
        channels = {"timed:*": TimedChannel, "plain:*": PlainChannel}

        def connect(self, params, info):
            return True
    """
)


@pytest.fixture(scope="module")
def timed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("async-hooks-app")
    (folder / "timed.py").write_text(APP)
    with running_server({}, args=("timed:TimedSocket",), cwd=folder) as server:
        yield server


def test_async_hooks_can_use_timeouts_task_groups_and_the_current_task(
    timed: ServerProcess,
) -> None:
    with Client.connect(f"{timed.ws_url}?vsn=2.0.0") as client:
        client.join("timed:a")
        reply = client.expect("join reply", lambda f: f[2] == "timed:a" and f[3] == "phx_reply")
        assert reply[4] == {"status": "ok", "response": {"in_a_task": True}}
        assert client.call("timed:a", "gather")[4] == {"status": "ok", "response": {"sum": 6}}
        assert client.call("timed:a", "plain")[4]["response"] == {"in_a_task": True}


def test_a_timeout_firing_in_a_hook_fails_that_hook_and_the_socket_carries_on(
    timed: ServerProcess,
) -> None:
    with Client.connect(f"{timed.ws_url}?vsn=2.0.0") as client:
        client.joined("timed:b")
        client.joined("plain:b")
        assert client.call("timed:b", "too_slow")[4] == {
            "status": "error",
            "response": {"reason": "timed out"},
        }
        assert client.call("plain:b", "echo", {"n": 1})[4] == {"status": "ok", "response": {"n": 1}}
        assert client.call("timed:b", "gather")[4]["response"] == {"sum": 6}
