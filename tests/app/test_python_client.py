"""What the README says of the Python client on PyPI (``phoenix-channels-python-client``),
as a new user would meet it: it authenticates with ``?api_key=``, which an app's own
``connect`` can accept; it gets pushes addressed to its channel, and drops broadcasts
(their join_ref is null, which it treats as stale: its own bug, Phoenix triggers it too)."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from phoenix_channels_python_client import PHXChannelsClient

from tests.support.processes import ServerProcess, running_server

APP = textwrap.dedent(
    """
    from switchboard import Channel, Socket, ok

    class FeedChannel(Channel):
        def join(self, payload):
            self.send_info("after_join")
            return ok()

        def handle_info(self, message):
            self.broadcast("news", {"n": 1})      # to every subscriber: join_ref null
            self.push("direct", {"n": 2})         # to this client: its join_ref

    class KeySocket(Socket):
        channels = {"feed:*": FeedChannel}

        def connect(self, params, info):
            return params.get("api_key") == "let-me-in"
    """
)


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("python-client-app")
    (folder / "feed.py").write_text(APP)
    with running_server({}, args=("feed:KeySocket",), cwd=folder) as server:
        yield server


def test_the_pypi_python_client_connects_with_its_api_key_and_gets_pushes_not_broadcasts(
    feed: ServerProcess,
) -> None:
    async def scenario() -> list[Any]:
        received: list[Any] = []
        direct = asyncio.Event()

        async def on_message(message: Any) -> None:
            received.append(message)
            if message.event == "direct":
                direct.set()

        async with PHXChannelsClient(websocket_url=feed.ws_url, api_key="let-me-in") as client:
            await client.subscribe_to_topic("feed:main", on_message)
            await asyncio.wait_for(direct.wait(), 5)
        return received

    received = asyncio.run(asyncio.wait_for(scenario(), 20))
    # The broadcast went out first on the same socket, so it had arrived, and was dropped.
    assert [(m.event, m.payload) for m in received] == [("direct", {"n": 2})]
