"""A topic's presence changes go out once per window: one presence_diff, one delta.

The in-process tests drive the node's presence directly (the real actor, a memory pub/sub)
and listen on the topic like a channel would; a long window makes "within one window"
certain. The last test has a few hundred real phoenix.js clients join one topic at once.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from switchboard.actors.bridge import tell
from switchboard.actors.faults import InjectFault
from switchboard.presence.state import Delta, Entry, PresenceState
from switchboard.presence.tracker import Presence
from switchboard.server.config import ConfigError, Settings
from tests.presence.inprocess import InProcessNode, in_process_node
from tests.presence.test_state import sync_diff
from tests.support.processes import ROOT, ServerProcess, running_server

WINDOW = 0.3  # long enough that what a test does between two flushes lands in one window
BURST_JS = ROOT / "tests" / "support" / "js" / "presence_burst.js"


class Listener:
    """A subscriber of a topic, like a channel: it keeps what the topic's broadcasts carry."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Any]] = []

    def deliver(self, event: str, frame: str | bytes) -> None:
        self.received.append((event, orjson.loads(frame)[4]))

    def diffs(self) -> list[dict[str, Any]]:
        return [payload for event, payload in self.received if event == "presence_diff"]


@pytest.fixture
def node() -> Iterator[InProcessNode]:
    with in_process_node(presence_window=WINDOW) as running:
        yield running


def _listen(node: InProcessNode, topic: str) -> Listener:
    listener = Listener()
    node.node.pubsub.subscribe(topic, listener)
    return listener


def _presence(node: InProcessNode) -> Presence:
    presence = node.node.presence
    assert presence is not None
    return presence


def _refs(diff_part: dict[str, Any]) -> dict[str, list[str]]:
    return {key: [m["phx_ref"] for m in p["metas"]] for key, p in diff_part.items()}


async def _open_window(node: InProcessNode, presence: Presence, topic: str) -> Listener:
    """A first change, flushed at once (the node was quiet): the next ones share a window."""
    listener = _listen(node, topic)
    await presence.track("owner-first", topic, "first", {})
    await node.until("the first change's diff", lambda: len(listener.diffs()) == 1)
    return listener


def test_changes_within_a_window_reach_subscribers_as_one_diff_without_what_came_and_went(
    node: InProcessNode,
) -> None:
    topic = "room:window"

    async def scenario() -> Listener:
        presence = _presence(node)
        listener = await _open_window(node, presence, topic)
        flushed_at = node.loop.time()
        await presence.track("owner-a", topic, "a", {"n": 1})
        await presence.track("owner-b", topic, "b", {"n": 2})
        await presence.untrack("owner-a", topic, "a")  # joined and left within the window
        await presence.track("owner-c", topic, "c", {"n": 3})
        await node.until("the window's diff", lambda: len(listener.diffs()) == 2, timeout=2)
        assert node.loop.time() - flushed_at < WINDOW + 0.2, "held longer than the window"
        return listener

    listener = node.run(scenario())
    diff = listener.diffs()[1]
    assert list(diff["joins"]) == ["b", "c"] and diff["leaves"] == {}
    assert [m["n"] for p in diff["joins"].values() for m in p["metas"]] == [2, 3]
    listed = node.run(_presence(node).list(topic))
    assert _refs(listed) == {
        "first": _refs(listener.diffs()[0]["joins"])["first"],
        **_refs(diff["joins"]),
    }


def test_meta_updates_within_a_window_are_one_diff_from_the_first_meta_to_the_last(
    node: InProcessNode,
) -> None:
    topic = "room:updates"

    async def scenario() -> tuple[Listener, dict[str, Any]]:
        presence = _presence(node)
        listener = _listen(node, topic)
        await presence.track("owner", topic, "user", {"status": "away"})
        await node.until("the track's diff", lambda: len(listener.diffs()) == 1)
        await presence.update("owner", topic, "user", {"status": "here"})
        await presence.update("owner", topic, "user", {"status": "busy"})
        await node.until("the updates' diff", lambda: len(listener.diffs()) == 2, timeout=2)
        return listener, await presence.list(topic)

    listener, listed = node.run(scenario())
    first, updates = listener.diffs()
    [away] = first["joins"]["user"]["metas"]
    assert updates["leaves"] == {"user": {"metas": [away]}}
    [busy] = updates["joins"]["user"]["metas"]
    assert busy["status"] == "busy" and busy["phx_ref"] != away["phx_ref"]
    assert listed == {"user": {"metas": [busy]}}
    view = sync_diff(sync_diff({}, first), updates)  # what phoenix.js makes of the two
    assert view == listed


def _remote_entries(node_id: str, topic: str, users: list[str]) -> list[dict[str, Any]]:
    return [
        Entry(node_id, f"o{i}", topic, user, f"ref-{node_id}-{i}", {"at": i}).to_wire()
        for i, user in enumerate(users)
    ]


def test_a_node_that_leaves_takes_its_presences_away_in_one_diff(node: InProcessNode) -> None:
    topic = "room:cluster"
    remote = "remote:4000:cafe01"
    users = ["r1", "r2", "r3"]

    async def scenario() -> Listener:
        presence = _presence(node)
        listener = _listen(node, topic)
        snapshot = {"node": remote, "seq": 3, "entries": _remote_entries(remote, topic, users)}
        presence.deliver("snapshot", orjson.dumps(snapshot).decode())
        await node.until("the remote node's joins", lambda: len(listener.diffs()) == 1)
        presence.deliver("goodbye", orjson.dumps({"node": remote}).decode())
        await node.until("the remote node's leaves", lambda: len(listener.diffs()) == 2, 2)
        return listener

    listener = node.run(scenario())
    joined, left = listener.diffs()
    assert list(joined["joins"]) == users and joined["leaves"] == {}
    assert list(left["leaves"]) == users and left["joins"] == {}
    assert sync_diff(sync_diff({}, joined), left) == {}


def test_this_nodes_changes_in_a_window_go_to_the_other_nodes_as_one_delta(
    node: InProcessNode,
) -> None:
    topic = "room:replicated"
    published: list[dict[str, Any]] = []

    async def scenario() -> None:
        presence = _presence(node)
        publish = presence._publish

        def record(event: str, body: dict[str, Any]) -> None:
            if event == "delta":
                published.append(json.loads(json.dumps(body)))
            publish(event, body)

        presence._publish = record  # type: ignore[method-assign]
        listener = await _open_window(node, presence, topic)
        await presence.track("owner-a", topic, "a", {})
        await presence.track("owner-b", topic, "b", {})
        await presence.untrack("owner-b", topic, "b")
        await presence.track("owner-c", topic, "c", {})
        await node.until("the window's diff", lambda: len(listener.diffs()) == 2, timeout=2)

    node.run(scenario())
    first, window = published
    assert (first.get("first"), first["seq"]) == (None, 1)
    assert (window["first"], window["seq"]) == (2, 5), "one delta standing for four changes"
    assert [e["key"] for e in window["joins"]] == ["a", "c"] and window["leaves"] == []
    elsewhere = PresenceState("other:4000:beef02")
    elsewhere.replace_node(first["node"], [], 0)
    for body in published:
        elsewhere.apply_delta(Delta.from_wire(body))
    assert sorted(elsewhere.list(topic)) == ["a", "c", "first"]


def test_a_change_acknowledged_while_a_flush_is_under_way_goes_out_in_the_next_one(
    node: InProcessNode,
) -> None:
    """It is not in the flush under way; it must not wait for some later change to go out
    (and a joiner must not be handed a state from before it meanwhile)."""
    topic = "room:during-flush"

    async def scenario() -> Listener:
        presence = _presence(node)
        listener = await _open_window(node, presence, topic)
        send_flushed = presence._send_flushed
        late: list[bool] = []

        async def slow_send(flushed: Any) -> None:
            if not late:  # the flush has its diffs; this change comes after them
                late.append(True)
                await presence.track("owner-late", topic, "late", {})
            await send_flushed(flushed)

        presence._send_flushed = slow_send  # type: ignore[method-assign]
        await presence.track("owner-a", topic, "a", {})
        await node.until(
            "the late change's diff",
            lambda: any("late" in diff["joins"] for diff in listener.diffs()),
            timeout=WINDOW * 5,
        )
        return listener

    listener = node.run(scenario())
    assert [sorted(diff["joins"]) for diff in listener.diffs()] == [["first"], ["a"], ["late"]]


def test_a_joiner_whose_socket_closes_as_its_state_is_written_does_not_hold_up_the_others(
    node: InProcessNode,
) -> None:
    topic = "room:gone"

    async def scenario() -> list[str]:
        presence = _presence(node)
        got: list[str] = []
        joiners: list[asyncio.Task[None]] = []

        def overflowing(text: str) -> None:  # the write dropped it as a slow consumer
            joiners[0].cancel()

        joiners.append(asyncio.ensure_future(presence.push_state(topic, overflowing)))
        joiners.append(asyncio.ensure_future(presence.push_state(topic, got.append)))
        await node.until("the second joiner's state", lambda: bool(got), timeout=WINDOW * 3)
        return got

    assert node.run(scenario()) == ["{}"]


def test_diffs_lost_with_a_crashed_actor_are_made_good_with_the_whole_state(
    node: InProcessNode,
) -> None:
    topic = "room:crash"

    async def scenario() -> Listener:
        presence = _presence(node)
        listener = await _open_window(node, presence, topic)
        await presence.track("owner-late", topic, "late", {})  # its diff waits in the actor
        assert node.node.actors is not None
        tell(node.node.actors.presence, InjectFault("test"))
        await node.until(
            "the state sent again",
            lambda: any(event == "presence_state" for event, _ in listener.received),
        )
        return listener

    listener = node.run(scenario())
    [state] = [payload for event, payload in listener.received if event == "presence_state"]
    assert sorted(state) == ["first", "late"]
    view = sync_diff({}, listener.diffs()[0])
    assert sorted(sync_diff(view, {"joins": state, "leaves": {}})) == ["first", "late"]


# -- a burst of real phoenix.js clients ----------------------------------------------------------

CLIENTS = 300


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    api_key = "coalescing-test-" + uuid.uuid4().hex
    with running_server({"SWITCHBOARD_LIMITS": "off", "SWITCHBOARD_API_KEY": api_key}) as node:
        node.api_key = api_key  # type: ignore[attr-defined]
        yield node


def test_a_burst_of_phoenix_js_joins_ends_with_the_exact_list_in_every_client(
    server: ServerProcess, tmp_path: Path
) -> None:
    node_binary = shutil.which("node")
    assert node_binary is not None, "node is not installed"
    topic = f"room:burst-{uuid.uuid4().hex[:8]}"
    users = [f"burst-{i}-{uuid.uuid4().hex[:4]}" for i in range(CLIENTS)]
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps([server.token(user) for user in users]))
    endpoint = f"ws://{server.host}:{server.port}/socket"
    burst = subprocess.Popen(
        [node_binary, str(BURST_JS), endpoint, topic, str(tokens), str(CLIENTS), "60000"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert burst.stdout is not None and burst.stdin is not None
        line = burst.stdout.readline()  # the script gives up after 60 s
        assert line, burst.stderr.read()[-2000:] if burst.stderr else "no report"
        result = json.loads(line)
        response = httpx.get(
            f"{server.url}/api/presence/{topic}",
            headers={"Authorization": f"Bearer {server.api_key}"},  # type: ignore[attr-defined]
            timeout=5,
        )
    finally:
        burst.communicate(timeout=30)  # closes stdin: the clients disconnect, the script ends
    frames = result["frames"]
    print(
        f"{CLIENTS} clients exact after {result['ms']} ms; presence frames per client: "
        f"min {min(frames)}, max {max(frames)}, mean {sum(frames) / len(frames):.1f}"
    )
    assert result["joined"] == CLIENTS
    assert len(result["lists"]) == 1, f"clients disagree: {len(result['lists'])} lists"
    [only] = result["lists"]
    listed = {key: refs for key, refs in only["list"]}
    assert sorted(listed) == sorted(users) and all(len(r) == 1 for r in listed.values())
    presences = response.json()["presences"]
    api = {key: sorted(m["phx_ref"] for m in p["metas"]) for key, p in presences.items()}
    assert listed == api, "the clients' lists differ from the server's"
    assert result["doubled"] == [], "some client listed a user twice on the way"
    assert max(frames) < CLIENTS // 4, "the joins were not gathered into a few diffs"


def test_a_presence_window_as_long_as_the_actor_timeout_is_refused() -> None:
    env = {"SWITCHBOARD_PRESENCE_WINDOW": "2", "SWITCHBOARD_ACTOR_TIMEOUT": "2"}
    with pytest.raises(ConfigError, match="SWITCHBOARD_PRESENCE_WINDOW"):
        Settings.from_env(env)
    assert Settings.from_env({"SWITCHBOARD_PRESENCE_WINDOW": "0"}).presence_window == 0
