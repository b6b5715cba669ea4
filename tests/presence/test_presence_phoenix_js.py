"""Presence as the real phoenix.js client sees it (``Presence``: onJoin, onLeave, onSync, list).

Each phoenix.js client lives in a Node agent (tests/support/js/agent.js) that takes commands
on stdin and reports every callback on stdout, so a test drives clients step by step and
waits on what they report. Bare ``switchboard.client`` clients look at the frames where the
order of the wire matters, and at the cache counters of ``GET /test/actors``.
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from switchboard.client import Client
from tests.support.clients import open_client
from tests.support.nodes import actor_status, poll_actor_status, running_node, unique_user
from tests.support.phoenix_agent import Agent, Listing
from tests.support.phoenix_agent import has_shape as _has_shape
from tests.support.phoenix_agent import refs as _refs
from tests.support.phoenix_agent import shape as _shape
from tests.support.processes import ServerProcess

WAIT = 5.0  # bound on any wait that has no tighter budget of its own
LEAVE_BUDGET = 2.0  # a leave, however the client went, reaches the others within this
API_KEY = "presence-test-api-key-" + uuid.uuid4().hex


# -- nodes -----------------------------------------------------------------------------------


def _node(env: dict[str, str]) -> contextlib.AbstractContextManager[ServerProcess]:
    return running_node({"SWITCHBOARD_API_KEY": API_KEY, **env})


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with _node({"SWITCHBOARD_LIMITS": "off"}) as node:
        yield node


@pytest.fixture
def topic() -> str:
    return f"room:presence-{uuid.uuid4().hex[:8]}"


def _api_presence(server: ServerProcess, topic: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.url}/api/presence/{topic}",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=WAIT,
    )
    assert response.status_code == 200, response.text
    return dict(response.json()["presences"])


# -- the Node agent ----------------------------------------------------------------------------


@pytest.fixture
def agents(server: ServerProcess) -> Iterator[Callable[[], Agent]]:
    made: list[Agent] = []

    def make() -> Agent:
        # Reconnects off: a test that drops a connection wants the client gone for good.
        agent = Agent(f"ws://{server.host}:{server.port}/socket", server.token, reconnect=False)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close()


def _check_metas(listing: Listing) -> None:
    for entry in listing:
        refs = [meta["phx_ref"] for meta in entry["metas"]]
        assert len(set(refs)) == len(refs), f"duplicated metas for {entry['key']}: {entry}"
        for meta in entry["metas"]:
            assert isinstance(meta["phx_ref"], str) and meta["phx_ref"], meta
            # A number, in milliseconds (JavaScript's Date.now()), from this session.
            assert type(meta["online_at"]) is int, meta
            assert abs(meta["online_at"] - time.time() * 1000) < 600_000, meta


# -- raw clients -------------------------------------------------------------------------------


def _presences(wire: Client, topic: str) -> dict[str, set[str]]:
    """key -> phx_refs, from the presence frames a raw client got so far, in order."""
    state: dict[str, set[str]] = {}
    for frame in wire.frames:
        if frame[2] == topic and frame[3] in ("presence_state", "presence_diff"):
            _apply(state, frame)
    return state


def _apply(state: dict[str, set[str]], frame: list[Any]) -> None:
    """Apply a presence_state or presence_diff frame to key -> set of phx_refs."""
    if frame[3] == "presence_state":
        state.clear()
        joins, leaves = frame[4], {}
    else:
        joins, leaves = frame[4]["joins"], frame[4]["leaves"]
    for key, presence in joins.items():
        state.setdefault(key, set()).update(m["phx_ref"] for m in presence["metas"])
    for key, presence in leaves.items():
        refs = state.get(key, set()) - {m["phx_ref"] for m in presence["metas"]}
        if refs:
            state[key] = refs
        else:
            state.pop(key, None)


# -- 1. two users ------------------------------------------------------------------------------


def test_two_users_see_each_other(
    server: ServerProcess, agents: Callable[[], Agent], topic: str
) -> None:
    agent = agents()
    alice, bob = unique_user("alice"), unique_user("bob")
    agent.connect("a", alice)
    agent.connect("b", bob)
    agent.join("a", topic)
    agent.join("b", topic)

    both = _has_shape({alice: 1, bob: 1})
    seen_by_a = agent.wait_list("a", topic, both, "alice sees alice and bob")
    seen_by_b = agent.wait_list("b", topic, both, "bob sees alice and bob")
    _check_metas(seen_by_a)
    assert _refs(seen_by_a) == _refs(seen_by_b)
    assert _refs(agent.list("a", topic)) == _refs(seen_by_a)  # list() agrees with the last onSync
    joined = [e["key"] for e in agent.of("a", "presence_join")]
    assert bob in joined, "alice's onJoin never named bob"
    api = _api_presence(server, topic)
    assert {k: sorted(m["phx_ref"] for m in v["metas"]) for k, v in api.items()} == _refs(seen_by_a)


# -- 2. one user, two tabs -----------------------------------------------------------------------


def test_the_same_user_in_two_tabs_is_one_key_with_two_metas(
    agents: Callable[[], Agent], topic: str
) -> None:
    agent = agents()
    user, other = unique_user("tabs"), unique_user("observer")
    agent.connect("observer", other)
    agent.connect("tab1", user)
    agent.connect("tab2", user)
    agent.join("observer", topic)
    agent.join("tab1", topic)
    first = agent.wait_list("observer", topic, _has_shape({other: 1, user: 1}), "tab 1 present")
    tab1_ref = _refs(first)[user][0]

    agent.join("tab2", topic)
    listing = agent.wait_list(
        "observer", topic, _has_shape({other: 1, user: 2}), "two metas for user"
    )
    _check_metas(listing)
    assert len(listing) == 2, "the same user in two tabs must be one key"
    tab2_ref = next(r for r in _refs(listing)[user] if r != tab1_ref)
    for tab in ("tab1", "tab2"):
        assert _refs(
            agent.wait_list(tab, topic, _has_shape({other: 1, user: 2}), "both tabs")
        ) == _refs(listing)

    since = agent.mark()
    agent.send("disconnect", id="tab2")  # closing a tab: the socket goes, no phx_leave
    leave = agent.wait_event(
        "observer's onLeave for the closed tab",
        lambda e: e["ev"] == "presence_leave" and e["id"] == "observer" and e["key"] == user,
        since,
        timeout=LEAVE_BUDGET,
    )
    assert [m["phx_ref"] for m in leave["left"]["metas"]] == [tab2_ref]
    assert [m["phx_ref"] for m in leave["current"]["metas"]] == [tab1_ref]
    remaining = agent.wait_list("observer", topic, _has_shape({other: 1, user: 1}), "one meta left")
    assert _refs(remaining)[user] == [tab1_ref]
    assert _refs(
        agent.wait_list("tab1", topic, _has_shape({other: 1, user: 1}), "tab 1 sees one")
    ) == _refs(remaining)


# -- 3. leaving, politely or not -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["leave", "socket_disconnect", "tcp_destroy", "sigkill"])
def test_a_client_that_goes_away_gives_the_others_on_leave_within_two_seconds(
    agents: Callable[[], Agent], topic: str, how: str
) -> None:
    observer, leaver = agents(), agents()  # the leaver in its own process, to kill it
    watcher_user, leaving_user = unique_user("watcher"), unique_user(f"leaver-{how}")
    observer.connect("w", watcher_user)
    leaver.connect("l", leaving_user)
    observer.join("w", topic)
    leaver.join("l", topic)
    observer.wait_list("w", topic, _has_shape({watcher_user: 1, leaving_user: 1}), "both present")

    since = observer.mark()
    started = time.monotonic()
    if how == "leave":
        leaver.send("leave", id="l", topic=topic)
    elif how == "socket_disconnect":
        leaver.send("disconnect", id="l")
    elif how == "tcp_destroy":
        leaver.send("destroy", id="l")
    else:
        leaver.process.send_signal(signal.SIGKILL)
    observer.wait_event(
        f"onLeave of the client gone by {how}",
        lambda e: e["ev"] == "presence_leave" and e["id"] == "w" and e["key"] == leaving_user,
        since,
        timeout=LEAVE_BUDGET,
    )
    elapsed = time.monotonic() - started
    assert elapsed < LEAVE_BUDGET
    assert _shape(observer.list("w", topic)) == {watcher_user: 1}
    if how == "leave":
        leaver.wait_event("leave reply", lambda e: e["ev"] == "left" and e["status"] == "ok")


# -- 4. the state and the diffs around it --------------------------------------------------------


def test_a_joiner_gets_no_diff_its_first_presence_state_already_holds(
    server: ServerProcess, topic: str
) -> None:
    """The joiner's own join is flushed with the state it gets, so it gets it only once."""
    user, sentinel = unique_user("raw"), unique_user("sentinel")
    with ExitStack() as stack:
        wire = open_client(stack, server, user)
        join_ref = wire.join(topic)
        state = wire.expect("presence_state", lambda f: f[3] == "presence_state")
        assert state[:3] == [join_ref, None, topic] and list(state[4]) == [user]
        open_client(stack, server, sentinel).join(topic)  # its diff comes after any of ours
        wire.expect("the sentinel's diff", lambda f: f[3] == "presence_diff")
    presence = [f for f in wire.frames if f[3] in ("presence_diff", "presence_state")]
    assert [f[3] for f in presence] == ["presence_state", "presence_diff"], wire.frames
    assert list(presence[1][4]["joins"]) == [sentinel] and presence[1][4]["leaves"] == {}


def test_a_joiner_served_a_state_from_before_its_join_lists_itself_once(
    agents: Callable[[], Agent], topic: str
) -> None:
    """Joiners right after a change get the state as of the last flush, then the diffs from
    there on, their own join among them."""
    agent = agents()
    first, second = unique_user("first"), unique_user("second")
    agent.connect("a", first)
    agent.connect("b", second)
    agent.join("a", topic)
    agent.wait_list("a", topic, _has_shape({first: 1}), "first listed")
    agent.join("b", topic)
    both = _has_shape({first: 1, second: 1})
    for id in ("a", "b"):
        listing = agent.wait_list(id, topic, both, "both listed once")
        _check_metas(listing)
        assert _shape(agent.list(id, topic)) == {first: 1, second: 1}
        syncs = agent.of(id, "sync")
        assert all(len(_shape(s["list"])) <= 2 for s in syncs), syncs
        assert all(max(_shape(s["list"]).values(), default=1) == 1 for s in syncs), syncs
    frames = [f["event"] for f in agent.of("b", "frame")]
    assert frames[0] == "presence_state", frames


def test_a_burst_of_joins_while_a_client_is_joining_converges_everywhere(
    server: ServerProcess, agents: Callable[[], Agent], topic: str
) -> None:
    agent = agents()
    ids = [f"c{i}" for i in range(8)]
    for id in ids:
        agent.connect(id, unique_user(id))
    for id in ids:  # all at once: diffs of the others interleave with each one's state
        agent.join(id, topic, wait=False)
    everyone = {agent.users[id]: 1 for id in ids}
    listings = {id: agent.wait_list(id, topic, _has_shape(everyone), "all 8 users") for id in ids}
    for listing in listings.values():
        _check_metas(listing)
    refs = _refs(listings["c0"])
    assert all(_refs(listing) == refs for listing in listings.values())
    api = _api_presence(server, topic)
    assert {k: sorted(m["phx_ref"] for m in v["metas"]) for k, v in api.items()} == refs
    for id in ids:
        assert _refs(agent.list(id, topic)) == refs
        leaves = agent.of(id, "presence_leave")
        assert not leaves, f"{id} saw leaves while nobody left: {leaves}"


# -- 5. the presence actor crashes ---------------------------------------------------------------


def test_presence_lists_survive_a_crash_of_the_presence_actor(
    server: ServerProcess, agents: Callable[[], Agent], topic: str
) -> None:
    agent = agents()
    ids = ["a", "b", "c"]
    for id in ids:
        agent.connect(id, unique_user(id))
        agent.join(id, topic)
    three = {agent.users[id]: 1 for id in ids}
    before = {id: _refs(agent.wait_list(id, topic, _has_shape(three), "3 users")) for id in ids}
    restarts_before = actor_status(server)["restarts"]["presence"]

    since = agent.mark()
    fault = httpx.post(f"{server.url}/test/actors/presence/fault", timeout=WAIT)
    assert fault.status_code == 200 and fault.json() == {"sent": True}
    poll_actor_status(  # an observable with a deadline, not a sleep
        server,
        "presence restarted",
        lambda s: s["restarts"]["presence"] == restarts_before + 1 and s["healthy"],
        1.0,
    )

    for id in ids:  # right after the restart, before anything else happens
        assert _refs(agent.list(id, topic)) == before[id]

    agent.connect("d", unique_user("d"))
    agent.join("d", topic)
    four = {**three, agent.users["d"]: 1}
    for id in ids:  # d's join diff is the sentinel: it went out after anything the restart sent
        listing = agent.wait_list(id, topic, _has_shape(four), "d joined after the restart")
        _check_metas(listing)
        refs = _refs(listing)
        assert {k: v for k, v in refs.items() if k != agent.users["d"]} == before[id]
        stray = [
            e
            for e in agent.events[since:]
            if e["id"] == id
            and e["ev"] in ("presence_join", "presence_leave")
            and e["key"] != agent.users["d"]
        ]
        assert not stray, f"{id} saw presence changes from the restart: {stray}"
    assert _refs(agent.wait_list("d", topic, _has_shape(four), "d sees all 4")) == _refs(
        agent.list("a", topic)
    )

    since = agent.mark()
    agent.send("leave", id="c", topic=topic)
    for id in ("a", "b", "d"):
        agent.wait_event(
            f"{id} onLeave for c",
            lambda e, id=id: (
                e["ev"] == "presence_leave" and e["id"] == id and e["key"] == agent.users["c"]
            ),
            since,
            timeout=LEAVE_BUDGET,
        )
        agent.wait_list(
            id, topic, _has_shape({k: 1 for k in four if k != agent.users["c"]}), "c left"
        )


# -- 6. presence_state from the cache -----------------------------------------------------------


def test_presence_state_is_built_once_and_shared_until_a_change() -> None:
    """While the presence actor is stalled no change can land, so every joiner must get the
    state already built (shared, none waiting for a build, the very same payload); once the
    queued tracks land, the next joiner gets a state built after them."""
    env = {"SWITCHBOARD_LIMITS": "off", "SWITCHBOARD_ACTOR_TIMEOUT": "0.5"}
    joiners = 10
    with _node(env) as node, ExitStack() as stack:
        topic = f"room:cache-{uuid.uuid4().hex[:6]}"
        first_user = unique_user("first")
        first = open_client(stack, node, first_user)
        # opened before the first join
        wires = [open_client(stack, node, unique_user(f"j{i}")) for i in range(joiners)]
        first.join(topic)
        built = first.expect("first state", lambda f: f[3] == "presence_state")
        assert list(built[4]) == [first_user]
        counters = actor_status(node)["presence_states"]

        stall = httpx.post(f"{node.url}/test/actors/presence/stall?seconds=3", timeout=WAIT)
        assert stall.json() == {"sent": True}
        stalled_at = time.monotonic()
        for wire in wires:
            wire.join(topic)
        states = [w.expect("state in the stall", lambda f: f[3] == "presence_state") for w in wires]
        during = actor_status(node)["presence_states"]
        assert time.monotonic() - stalled_at < 3, "the states came while the actor was stalled"
        assert all(s[4] == built[4] for s in states), "every joiner got the state already built"
        assert during["shared"] - counters["shared"] == joiners, (counters, during)
        assert during["awaited"] == counters["awaited"], "nobody waited for a new build"

        # The stall ends and the queued tracks land: every client converges on all users.
        for wire in [first, *wires]:
            wire.wait_until(
                "every joiner's diff",
                lambda wire=wire: len(_presences(wire, topic)) == joiners + 1,
            )
            assert all(len(refs) == 1 for refs in _presences(wire, topic).values())

        late_user = unique_user("late")
        late = open_client(stack, node, late_user)
        late.join(topic)
        fresh = late.expect("state after the changes", lambda f: f[3] == "presence_state")
        assert len(set(fresh[4]) - {late_user}) == joiners + 1, (
            "the late joiner's state was built after the changes and holds everyone"
        )
        late.wait_until(
            "the late joiner sees itself too",
            lambda: len(_presences(late, topic)) == joiners + 2,
        )
