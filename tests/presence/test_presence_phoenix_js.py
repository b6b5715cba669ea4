"""Presence as the real phoenix.js client sees it (``Presence``: onJoin, onLeave, onSync, list).

Each phoenix.js client lives in a Node agent (tests/presence/js/agent.js) that takes commands
on stdin and reports every callback on stdout, so a test drives clients step by step and
waits on what they report. Raw ``websockets`` clients look at the frames where the order of
the wire matters, and at the cache counters of ``GET /test/actors``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.support.processes import ROOT, ServerProcess, running_server

AGENT = Path(__file__).parent / "js" / "agent.js"
WAIT = 5.0  # bound on any wait that has no tighter budget of its own
LEAVE_BUDGET = 2.0  # a leave, however the client went, reaches the others within this
API_KEY = "presence-test-api-key-" + uuid.uuid4().hex

Event = dict[str, Any]
Listing = list[dict[str, Any]]


# -- nodes -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _node(env: dict[str, str]) -> Iterator[ServerProcess]:
    with running_server({"SWITCHBOARD_API_KEY": API_KEY, **env}) as server:
        yield server
    # The log reader closes the node's stderr pipe once the output ends; wait for it so
    # that no unclosed file is left to warn (warnings are errors here).
    deadline = time.monotonic() + 5
    stderr = server.process.stderr
    while stderr is not None and not stderr.closed and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with _node({"SWITCHBOARD_LIMITS": "off"}) as node:
        yield node


@pytest.fixture
def topic() -> str:
    return f"room:presence-{uuid.uuid4().hex[:8]}"


def _user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def _actors(server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/test/actors", timeout=WAIT)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _api_presence(server: ServerProcess, topic: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.url}/api/presence/{topic}",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=WAIT,
    )
    assert response.status_code == 200, response.text
    return dict(response.json()["presences"])


# -- the Node agent ----------------------------------------------------------------------------


class Agent:
    """One Node process holding phoenix.js clients; ``events`` is everything it reported."""

    def __init__(self, server: ServerProcess) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.fail("node is not installed")
        if not (ROOT / "node_modules" / "phoenix").is_dir():
            pytest.fail("node_modules lacks phoenix: run `npm ci` in the repository root")
        self.server = server
        self.events: list[Event] = []
        self.stderr: list[str] = []
        self.users: dict[str, str] = {}
        self._seq = 0
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [node, str(AGENT), f"ws://{server.host}:{server.port}/socket"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._readers = [
            threading.Thread(target=self._read_events, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_events(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                event = json.loads(line)
                with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for line in self.process.stderr:
                self.stderr.append(line)

    def send(self, op: str, **fields: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()

    def wait_until(self, what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
        """Block until ``check()`` (run under the lock) returns something truthy."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                errors = [e for e in self.events if e["ev"] == "agent_error"]
                assert not errors, f"the Node agent failed: {errors}"
                result = check()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    tail = json.dumps(self.events[-12:], indent=1)
                    pytest.fail(
                        f"timed out after {timeout}s waiting for {what}\nlast events: {tail}\n"
                        f"stderr: {''.join(self.stderr)[-2000:]}",
                        pytrace=False,
                    )
                self._changed.wait(remaining)

    def wait_event(
        self, what: str, match: Callable[[Event], bool], since: int = 0, timeout: float = WAIT
    ) -> Event:
        def check() -> Event | None:
            return next((e for e in self.events[since:] if match(e)), None)

        return self.wait_until(what, check, timeout)  # type: ignore[no-any-return]

    def mark(self) -> int:
        with self._changed:
            return len(self.events)

    def of(self, id: str, ev: str, since: int = 0) -> list[Event]:
        with self._changed:
            return [e for e in self.events[since:] if e["id"] == id and e["ev"] == ev]

    # -- client operations

    def connect(self, id: str, user: str) -> None:
        self.users[id] = user
        self.send("connect", id=id, token=self.server.token(user))
        self.wait_event(f"{id} open", lambda e: e["ev"] == "open" and e["id"] == id)

    def join(self, id: str, topic: str, wait: bool = True) -> Event | None:
        since = self.mark()
        self.send("join", id=id, topic=topic)
        if not wait:
            return None
        reply = self.wait_event(
            f"{id} join reply", lambda e: e["ev"] == "join" and e["id"] == id, since
        )
        assert reply["status"] == "ok", reply
        return reply

    def list(self, id: str) -> Listing:
        self._seq += 1
        seq = self._seq
        self.send("list", id=id, seq=seq)
        event = self.wait_event(
            f"{id} list", lambda e: e["ev"] == "list" and e["id"] == id and e["seq"] == seq
        )
        return list(event["list"])

    def wait_list(
        self, id: str, want: Callable[[Listing], bool], what: str, timeout: float = WAIT
    ) -> Listing:
        """Wait until the client's latest onSync list satisfies ``want``."""

        def check() -> Listing | None:
            syncs = [e for e in self.events if e["id"] == id and e["ev"] == "sync"]
            if syncs and want(syncs[-1]["list"]):
                return list(syncs[-1]["list"])
            return None

        return self.wait_until(f"{id}: {what}", check, timeout)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.send("exit")
        if self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        for reader in self._readers:
            reader.join(5)


@pytest.fixture
def agents(server: ServerProcess) -> Iterator[Callable[[], Agent]]:
    made: list[Agent] = []

    def make() -> Agent:
        agent = Agent(server)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close()


def _shape(listing: Listing) -> dict[str, int]:
    """key -> number of metas."""
    return {entry["key"]: len(entry["metas"]) for entry in listing}


def _refs(listing: Listing) -> dict[str, list[str]]:
    return {entry["key"]: sorted(m["phx_ref"] for m in entry["metas"]) for entry in listing}


def _has_shape(shape: dict[str, int]) -> Callable[[Listing], bool]:
    return lambda listing: _shape(listing) == shape


def _check_metas(listing: Listing) -> None:
    for entry in listing:
        refs = [meta["phx_ref"] for meta in entry["metas"]]
        assert len(set(refs)) == len(refs), f"duplicated metas for {entry['key']}: {entry}"
        for meta in entry["metas"]:
            assert isinstance(meta["phx_ref"], str) and meta["phx_ref"], meta
            assert isinstance(meta["online_at"], str) and meta["online_at"].isdigit(), meta


# -- raw clients -------------------------------------------------------------------------------


class Wire:
    """A bare Phoenix V2 client on websockets' sync API: every received frame is kept."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.frames: list[list[Any]] = []
        self._ref = 0

    def push(self, topic: str, event: str, payload: Any, join_ref: str | None = None) -> str:
        self._ref += 1
        ref = str(self._ref)
        self.connection.send(json.dumps([join_ref, ref, topic, event, payload]))
        return ref

    def join(self, topic: str) -> str:
        self._ref += 1
        ref = str(self._ref)
        self.connection.send(json.dumps([ref, ref, topic, "phx_join", {}]))
        return ref

    def wait(self, what: str, match: Callable[[list[Any]], bool], timeout: float = WAIT) -> Any:
        for frame in self.frames:
            if match(frame):
                return frame
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no frame for {what} within {timeout}s; got {self.frames[-8:]}")
            try:
                frame = json.loads(self.connection.recv(timeout=remaining))
            except TimeoutError:
                continue
            self.frames.append(frame)
            if match(frame):
                return frame


def _wire(stack: ExitStack, server: ServerProcess, user: str) -> Wire:
    return Wire(stack.enter_context(connect(server.socket_url(user), open_timeout=WAIT)))


def _presences(wire: Wire, topic: str) -> dict[str, set[str]]:
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
    alice, bob = _user("alice"), _user("bob")
    agent.connect("a", alice)
    agent.connect("b", bob)
    agent.join("a", topic)
    agent.join("b", topic)

    both = _has_shape({alice: 1, bob: 1})
    seen_by_a = agent.wait_list("a", both, "alice sees alice and bob")
    seen_by_b = agent.wait_list("b", both, "bob sees alice and bob")
    _check_metas(seen_by_a)
    assert _refs(seen_by_a) == _refs(seen_by_b)
    assert _refs(agent.list("a")) == _refs(seen_by_a)  # list() agrees with the last onSync
    joined = [e["key"] for e in agent.of("a", "presence_join")]
    assert bob in joined, "alice's onJoin never named bob"
    api = _api_presence(server, topic)
    assert {k: sorted(m["phx_ref"] for m in v["metas"]) for k, v in api.items()} == _refs(seen_by_a)


# -- 2. one user, two tabs -----------------------------------------------------------------------


def test_the_same_user_in_two_tabs_is_one_key_with_two_metas(
    agents: Callable[[], Agent], topic: str
) -> None:
    agent = agents()
    user, other = _user("tabs"), _user("observer")
    agent.connect("observer", other)
    agent.connect("tab1", user)
    agent.connect("tab2", user)
    agent.join("observer", topic)
    agent.join("tab1", topic)
    first = agent.wait_list("observer", _has_shape({other: 1, user: 1}), "tab 1 present")
    tab1_ref = _refs(first)[user][0]

    agent.join("tab2", topic)
    listing = agent.wait_list("observer", _has_shape({other: 1, user: 2}), "two metas for user")
    _check_metas(listing)
    assert len(listing) == 2, "the same user in two tabs must be one key"
    tab2_ref = next(r for r in _refs(listing)[user] if r != tab1_ref)
    for tab in ("tab1", "tab2"):
        assert _refs(agent.wait_list(tab, _has_shape({other: 1, user: 2}), "both tabs")) == _refs(
            listing
        )

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
    remaining = agent.wait_list("observer", _has_shape({other: 1, user: 1}), "one meta left")
    assert _refs(remaining)[user] == [tab1_ref]
    assert _refs(agent.wait_list("tab1", _has_shape({other: 1, user: 1}), "tab 1 sees one")) == (
        _refs(remaining)
    )


# -- 3. leaving, politely or not -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["leave", "socket_disconnect", "tcp_destroy", "sigkill"])
def test_a_client_that_goes_away_gives_the_others_on_leave_within_two_seconds(
    agents: Callable[[], Agent], topic: str, how: str
) -> None:
    observer, leaver = agents(), agents()  # the leaver in its own process, to kill it
    watcher_user, leaving_user = _user("watcher"), _user(f"leaver-{how}")
    observer.connect("w", watcher_user)
    leaver.connect("l", leaving_user)
    observer.join("w", topic)
    leaver.join("l", topic)
    observer.wait_list("w", _has_shape({watcher_user: 1, leaving_user: 1}), "both present")

    since = observer.mark()
    started = time.monotonic()
    if how == "leave":
        leaver.send("leave", id="l")
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
    assert _shape(observer.list("w")) == {watcher_user: 1}
    if how == "leave":
        leaver.wait_event("leave reply", lambda e: e["ev"] == "left" and e["status"] == "ok")


# -- 4. diffs before the state ------------------------------------------------------------------


def test_the_server_sends_the_self_join_diff_before_presence_state(
    server: ServerProcess, topic: str
) -> None:
    """Documents the order the next test relies on (phoenix.js must buffer the diff)."""
    user = _user("raw")
    with ExitStack() as stack:
        wire = _wire(stack, server, user)
        join_ref = wire.join(topic)
        wire.wait("presence_state", lambda f: f[3] == "presence_state")
    presence = [f for f in wire.frames if f[3] in ("presence_diff", "presence_state")]
    assert [f[3] for f in presence] == ["presence_diff", "presence_state"], wire.frames
    diff, state = presence
    assert diff[:3] == [None, None, topic] and state[:3] == [join_ref, None, topic]
    assert list(diff[4]["joins"]) == [user] and diff[4]["leaves"] == {}
    assert state[4] == diff[4]["joins"], "the state already holds the join the diff announces"


def test_phoenix_js_buffers_its_own_join_diff_until_the_state_arrives(
    agents: Callable[[], Agent], topic: str
) -> None:
    agent = agents()
    user = _user("self")
    agent.connect("a", user)
    agent.join("a", topic)
    listing = agent.wait_list("a", _has_shape({user: 1}), "self listed once")
    _check_metas(listing)
    frames = [e["data"] for e in agent.of("a", "frame")]
    assert [f[3] for f in frames[:2]] == ["presence_diff", "presence_state"], (
        "precondition: the self-join diff came before the state"
    )
    assert _shape(agent.list("a")) == {user: 1}, "no duplicated meta from the buffered diff"
    syncs = agent.of("a", "sync")
    assert syncs and all(_shape(s["list"]) == {user: 1} for s in syncs), syncs


def test_a_burst_of_joins_while_a_client_is_joining_converges_everywhere(
    server: ServerProcess, agents: Callable[[], Agent], topic: str
) -> None:
    agent = agents()
    ids = [f"c{i}" for i in range(8)]
    for id in ids:
        agent.connect(id, _user(id))
    for id in ids:  # all at once: diffs of the others interleave with each one's state
        agent.join(id, topic, wait=False)
    everyone = {agent.users[id]: 1 for id in ids}
    listings = {id: agent.wait_list(id, _has_shape(everyone), "all 8 users") for id in ids}
    for listing in listings.values():
        _check_metas(listing)
    refs = _refs(listings["c0"])
    assert all(_refs(listing) == refs for listing in listings.values())
    api = _api_presence(server, topic)
    assert {k: sorted(m["phx_ref"] for m in v["metas"]) for k, v in api.items()} == refs
    for id in ids:
        assert _refs(agent.list(id)) == refs
        leaves = agent.of(id, "presence_leave")
        assert not leaves, f"{id} saw leaves while nobody left: {leaves}"


# -- 5. the presence actor crashes ---------------------------------------------------------------


def test_presence_lists_survive_a_crash_of_the_presence_actor(
    server: ServerProcess, agents: Callable[[], Agent], topic: str
) -> None:
    agent = agents()
    ids = ["a", "b", "c"]
    for id in ids:
        agent.connect(id, _user(id))
        agent.join(id, topic)
    three = {agent.users[id]: 1 for id in ids}
    before = {id: _refs(agent.wait_list(id, _has_shape(three), "3 users")) for id in ids}
    restarts_before = _actors(server)["restarts"]["presence"]

    since = agent.mark()
    fault = httpx.post(f"{server.url}/test/actors/presence/fault", timeout=WAIT)
    assert fault.status_code == 200 and fault.json() == {"sent": True}
    deadline = time.monotonic() + 1.0
    while True:  # an observable with a deadline, not a sleep
        status = _actors(server)
        if status["restarts"]["presence"] == restarts_before + 1 and status["healthy"]:
            break
        assert time.monotonic() < deadline, f"presence not restarted within 1 s: {status}"
        time.sleep(0.02)

    for id in ids:  # right after the restart, before anything else happens
        assert _refs(agent.list(id)) == before[id]

    agent.connect("d", _user("d"))
    agent.join("d", topic)
    four = {**three, agent.users["d"]: 1}
    for id in ids:  # d's join diff is the sentinel: it went out after anything the restart sent
        listing = agent.wait_list(id, _has_shape(four), "d joined after the restart")
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
    assert _refs(agent.wait_list("d", _has_shape(four), "d sees all 4")) == _refs(agent.list("a"))

    since = agent.mark()
    agent.send("leave", id="c")
    for id in ("a", "b", "d"):
        agent.wait_event(
            f"{id} onLeave for c",
            lambda e, id=id: (
                e["ev"] == "presence_leave" and e["id"] == id and e["key"] == agent.users["c"]
            ),
            since,
            timeout=LEAVE_BUDGET,
        )
        agent.wait_list(id, _has_shape({k: 1 for k in four if k != agent.users["c"]}), "c left")


# -- 6. presence_state from the cache -----------------------------------------------------------


def test_presence_state_is_built_once_and_served_from_the_cache_until_a_change() -> None:
    """While the presence actor is stalled no change can land, so every joiner must get the
    state already built and cached (cache hits, no new miss, the very same payload); once the
    queued tracks land, the cache is invalidated and the next joiner gets a fresh build."""
    env = {"SWITCHBOARD_LIMITS": "off", "SWITCHBOARD_ACTOR_TIMEOUT": "0.5"}
    joiners = 10
    with _node(env) as node, ExitStack() as stack:
        topic = f"room:cache-{uuid.uuid4().hex[:6]}"
        first_user = _user("first")
        first = _wire(stack, node, first_user)
        wires = [_wire(stack, node, _user(f"j{i}")) for i in range(joiners)]  # open before
        first.join(topic)
        built = first.wait("first state", lambda f: f[3] == "presence_state")
        assert list(built[4]) == [first_user]
        counters = _actors(node)["cache"]

        stall = httpx.post(f"{node.url}/test/actors/presence/stall?seconds=3", timeout=WAIT)
        assert stall.json() == {"sent": True}
        stalled_at = time.monotonic()
        for wire in wires:
            wire.join(topic)
        states = [w.wait("state in the stall", lambda f: f[3] == "presence_state") for w in wires]
        during = _actors(node)["cache"]
        assert time.monotonic() - stalled_at < 3, "the states came while the actor was stalled"
        assert all(s[4] == built[4] for s in states), "every joiner got the cached state"
        assert during["hits"] - counters["hits"] == joiners, (counters, during)
        assert during["misses"] == counters["misses"], "nothing was built again"

        # The stall ends and the queued tracks land: every client converges on all users.
        for wire in [first, *wires]:
            wire.wait(
                "every joiner's diff",
                lambda _frame, wire=wire: len(_presences(wire, topic)) == joiners + 1,
            )
            assert all(len(refs) == 1 for refs in _presences(wire, topic).values())

        after = _actors(node)["cache"]
        late = _wire(stack, node, _user("late"))
        late.join(topic)
        fresh = late.wait("state after the changes", lambda f: f[3] == "presence_state")
        assert len(fresh[4]) == joiners + 2, "the late joiner's state holds everyone"
        final = _actors(node)["cache"]
        assert final["misses"] == after["misses"] + 1, "the changes invalidated the cached state"
