"""The README's presence example, as written, with phoenix.js ``Presence`` on each client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.app.examples import write_examples
from tests.support.phoenix_agent import Agent, has_shape
from tests.support.processes import ServerProcess, running_server


@pytest.fixture(scope="module")
def online(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = write_examples(tmp_path_factory.mktemp("online-app"), "online.py")
    with running_server({}, args=("online:OnlineSocket",), cwd=folder) as server:
        yield server


def test_every_client_sees_who_is_online_and_who_left(online: ServerProcess) -> None:
    agent = Agent(f"ws://127.0.0.1:{online.port}/socket", online.token, reconnect=False)
    try:
        agent.connect("alice-1", "alice")
        agent.connect("alice-2", "alice")  # a second tab
        agent.connect("bob", "bob")
        for id in ("alice-1", "alice-2", "bob"):
            agent.join(id, "online:lobby")
        for id in ("alice-1", "alice-2", "bob"):
            agent.wait_list(id, "online:lobby", has_shape({"alice": 2, "bob": 1}), "all three")
        metas = agent.list("bob", "online:lobby")
        assert {m["status"] for entry in metas for m in entry["metas"]} == {"online"}

        agent.send("disconnect", id="bob")
        agent.wait_list("alice-1", "online:lobby", has_shape({"alice": 2}), "bob gone")
        agent.send("disconnect", id="alice-2")
        agent.wait_list("alice-1", "online:lobby", has_shape({"alice": 1}), "one tab left")
    finally:
        agent.close()
