"""The README's chat app, as written, served by ``switchboard serve chat:ChatSocket`` from
the folder holding chat.py, and used through the real phoenix.js client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from switchboard.client import Client
from tests.app.examples import write_examples
from tests.support.phoenix_agent import Agent
from tests.support.processes import ServerProcess, running_server

API_KEY = "chat-example-api-key"


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = write_examples(tmp_path_factory.mktemp("chat-app"), "chat.py")
    env = {"SWITCHBOARD_API_KEY": API_KEY}
    with running_server(env, args=("chat:ChatSocket",), cwd=folder) as server:
        yield server


@pytest.fixture
def agent(chat: ServerProcess) -> Iterator[Agent]:
    agent = Agent(f"ws://127.0.0.1:{chat.port}/socket", lambda user: "", reconnect=False)
    try:
        yield agent
    finally:
        agent.close()


def test_a_client_without_a_name_is_refused_with_403(chat: ServerProcess) -> None:
    assert Client.refusal(f"{chat.ws_url}?vsn=2.0.0").status == 403


def test_phoenix_js_clients_join_with_the_pin_and_hear_each_other(agent: Agent) -> None:
    agent.connect_with("alice", {"name": "alice"})
    agent.connect_with("bob", {"name": "bob"})
    for id in ("alice", "bob"):
        agent.wait_event(f"{id} open", lambda e, id=id: e["ev"] == "open" and e["id"] == id)

    refused = agent.join("alice", "lobby:side", payload={"pin": "0000"}, expect="error")
    assert refused is not None and refused["response"] == {"reason": "wrong pin"}

    joined = agent.join("alice", "lobby:main", payload={"pin": "1234"}, events=("said",))
    assert joined is not None and joined["response"] == {"you": "alice"}
    joined = agent.join("bob", "lobby:main", payload={"pin": "1234"}, events=("said",))
    assert joined is not None and joined["response"] == {"you": "bob"}

    reply = agent.push("alice", "lobby:main", "say", {"text": "hi all"})
    assert (reply["status"], reply["response"]) == ("ok", {})
    said = {"name": "alice", "text": "hi all"}
    for id in ("alice", "bob"):
        agent.wait_until(
            f"{id} hears alice", lambda id=id: agent.messages(id, "lobby:main", "said")
        )
        assert agent.messages(id, "lobby:main", "said") == [said]


def test_a_disconnect_on_the_socket_id_closes_only_that_users_socket(
    chat: ServerProcess, agent: Agent
) -> None:
    agent.connect_with("carol", {"name": "carol"})
    agent.connect_with("dave", {"name": "dave"})
    agent.join("carol", "lobby:main", payload={"pin": "1234"})
    agent.join("dave", "lobby:main", payload={"pin": "1234"})

    response = httpx.post(
        f"{chat.url}/api/broadcast",
        json={"topic": "chat:carol", "event": "disconnect", "payload": {}},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 202, response.text

    closed = agent.wait_event("carol closed", lambda e: e["ev"] == "close" and e["id"] == "carol")
    assert closed["code"] == 1001
    assert agent.push("dave", "lobby:main", "say", {"text": "still here"})["status"] == "ok"
    assert agent.of("dave", "close") == []
