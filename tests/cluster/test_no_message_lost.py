"""No message lost, with real parts: three nodes behind nginx, a real redis-server, and
phoenix.js clients written as the README's recovery client (params as a function sending
``since``, the ``ref`` of each message remembered in ``channel.on``).

A publisher on one node shouts a numbered message every 50 ms into a ``room:*`` topic
(which keeps history). Whatever happens to the others (their TCP connection drops, their
node drains on SIGTERM or dies on SIGKILL) every client ends with every shout exactly once
and in order: phoenix.js reconnects and rejoins, and the rejoin recovers what was missed.
When Redis restarts without persistence the history behind the clients is gone: they are
made to rejoin and are told ``recovered: false``, never left with a silent gap. And a join
answered ok on one node hears a broadcast sent right after it from another.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from switchboard.client import Client
from switchboard.server.auth import issue_token
from switchboard.server.devcluster import LocalCluster
from switchboard.server.pubsub import Position
from tests.cluster.helpers import (
    API_KEY,
    addresses_by_node,
    api,
    by_name,
    ready,
    revive,
    running_cluster,
    sockets_by_user,
    wait_for,
)
from tests.support.nodes import unique_user
from tests.support.phoenix_agent import Agent, Event

SHOUT_EVERY_MS = 50  # 20 shouts a second
DRAIN_PERIOD = 2.0
SHUTDOWN_TIMEOUT = 10.0
RECOVERY = 5.0 + 3.0  # Redis reconnect backoff cap, plus the connect (see test_redis_outage)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    env = {
        "SWITCHBOARD_DRAIN_PERIOD": str(DRAIN_PERIOD),
        "SWITCHBOARD_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
    }
    with running_cluster(env, nodes=3) as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def whole_cluster(cluster: LocalCluster) -> None:
    revive(cluster)


def place(agent: Agent, cluster: LocalCluster, ids_by_node: dict[str, list[str]]) -> None:
    """Connect each client from a source address that nginx sends to its node."""
    addresses = addresses_by_node(cluster, max(len(ids) for ids in ids_by_node.values()))
    for name, ids in ids_by_node.items():
        for index, id in enumerate(ids):
            agent.connect(id, unique_user(id), addresses[name][index])
    first = by_name(cluster, "node1")
    wait_for(
        "every client on its node",
        lambda: all(
            sockets_by_user(first).get(agent.users[id]) == [name]
            for name, ids in ids_by_node.items()
            for id in ids
        ),
    )


def shouts(agent: Agent, id: str, since: int = 0) -> list[int]:
    return [e["n"] for e in agent.of(id, "shout", since) if e["from"] == "pub"]


def rejoins(agent: Agent, id: str, topic: str, since: int) -> list[Event]:
    return agent.of(id, "join", since, topic=topic, status="ok")


def start_shouting(agent: Agent, topic: str, ids: list[str]) -> None:
    agent.send("shout_every", id="pub", topic=topic, ms=SHOUT_EVERY_MS, **{"from": "pub"})
    for id in ids:
        agent.wait_until(f"{id} gets shouts", lambda id=id: len(shouts(agent, id)) >= 3)


def stop_shouting(agent: Agent, ids: list[str], after: int = 10) -> int:
    """Let ``after`` more shouts reach everyone, stop, and wait for the last everywhere."""
    mark = max(shouts(agent, "pub") or [0])
    for id in ids:
        agent.wait_until(
            f"{id} gets shouts after the trouble",
            lambda id=id: any(n > mark + after for n in shouts(agent, id)),
            timeout=15.0,
        )
    agent.send("stop_shouting", id="pub")
    last = int(agent.wait_event("stopped", lambda e: e["ev"] == "shouting_stopped")["last"])
    for id in ids:
        agent.wait_until(f"{id} gets shout {last}", lambda id=id: last in shouts(agent, id))
    return last


def assert_every_shout_once_in_order(agent: Agent, ids: list[str], last: int) -> None:
    for id in ids:
        got = shouts(agent, id)
        first = got[0]
        missing = sorted(set(range(first, last + 1)) - set(got))
        assert not missing, f"{id} missed shouts {missing}"
        assert got == list(range(first, last + 1)), f"{id} got shouts twice or out of order"


def test_clients_whose_tcp_connection_drops_recover_every_shout_once_in_order(
    cluster: LocalCluster, agent: Agent
) -> None:
    place(agent, cluster, {"node1": ["c1", "c2", "c3"], "node2": ["pub"]})
    room = f"room:{unique_user('drop')}"
    ids = ["pub", "c1", "c2", "c3"]
    for id in ids:
        agent.join(id, room, recover=True)
    start_shouting(agent, room, ids)

    since = agent.mark()
    agent.send("drop", id="c1", ms=700)  # about 14 shouts go by while it is away
    agent.send("drop", id="c2", ms=300)
    for id in ("c1", "c2"):
        agent.wait_event(
            f"{id} rejoins", lambda e, id=id: e in rejoins(agent, id, room, since), since
        )
    last = stop_shouting(agent, ids)
    assert_every_shout_once_in_order(agent, ids, last)
    for id in ("c1", "c2"):
        (rejoin,) = rejoins(agent, id, room, since)
        assert rejoin["response"]["recovered"] is True, rejoin
        during = [e for e in agent.of(id, "shout", since) if e["t"] < rejoin["t"]]
        assert during == [], f"{id} got shouts while it was away: {during}"


def test_through_a_drain_and_a_kill_of_two_of_three_nodes_every_client_gets_every_shout_once(
    cluster: LocalCluster, agent: Agent
) -> None:
    node2, node3 = by_name(cluster, "node2"), by_name(cluster, "node3")
    placement = {"node1": ["pub", "a1"], "node2": ["b1", "b2"], "node3": ["c1", "c2"]}
    place(agent, cluster, placement)
    room = f"room:{unique_user('failover')}"
    ids = [id for group in placement.values() for id in group]
    for id in ids:
        agent.join(id, room, recover=True)
    start_shouting(agent, room, ids)

    # -- SIGTERM node2: its clients are closed with 1012 over the drain period and move on.
    since = agent.mark()
    signalled = time.monotonic()
    node2.process.send_signal(signal.SIGTERM)
    for id in placement["node2"]:
        close = agent.wait_event(
            f"{id} closed by the drain",
            lambda e, id=id: e["ev"] == "close" and e["id"] == id,
            since,
            timeout=DRAIN_PERIOD + 3.0,
        )
        assert close["code"] == 1012, close
        agent.wait_event(
            f"{id} rejoins elsewhere", lambda e, id=id: e in rejoins(agent, id, room, since), since
        )
    code = node2.process.wait(max(0.1, signalled + SHUTDOWN_TIMEOUT - time.monotonic()))
    assert code == 0, f"the drained node exited with {code}"

    # -- SIGKILL node3: its clients see their connections die and move on.
    killed = agent.mark()
    node3.process.send_signal(signal.SIGKILL)
    node3.process.wait(5)
    for id in placement["node3"]:
        agent.wait_event(
            f"{id} rejoins elsewhere",
            lambda e, id=id: e in rejoins(agent, id, room, killed),
            killed,
            timeout=10.0,
        )

    last = stop_shouting(agent, ids)
    assert_every_shout_once_in_order(agent, ids, last)
    for id in [*placement["node2"], *placement["node3"]]:
        for rejoin in rejoins(agent, id, room, since):
            assert rejoin["response"]["recovered"] is True, rejoin
        assert not any(n < 3 for n in shouts(agent, id, since)), "a rejoin started over"


def test_a_redis_restart_that_lost_the_history_makes_clients_rejoin_with_recovered_false(
    cluster: LocalCluster, agent: Agent
) -> None:
    placement = {"node1": ["pub", "a1"], "node2": ["b1"]}
    place(agent, cluster, placement)
    room = f"room:{unique_user('amnesia')}"
    ids = [id for group in placement.values() for id in group]
    before = {}
    for id in ids:
        reply = agent.join(id, room, recover=True)
        assert reply is not None
        before[id] = Position.parse(reply["response"]["position"])
    start_shouting(agent, room, ids)

    assert cluster.redis is not None
    since = agent.mark()
    cluster.redis.kill()
    cluster.redis.wait(5)
    for node in cluster.nodes:
        wait_for(f"{node.name} sees Redis gone", lambda node=node: ready(node).status_code == 503)
    cluster.restart_redis()  # empty: no persistence
    for node in cluster.nodes:
        wait_for(
            f"{node.name} ready again",
            lambda node=node: ready(node).status_code == 200,
            timeout=RECOVERY,
        )
    for id in ids:
        rejoin = agent.wait_event(
            f"{id} is made to rejoin", lambda e, id=id: e in rejoins(agent, id, room, since), since
        )
        assert rejoin["response"]["recovered"] is False, rejoin
        position = Position.parse(rejoin["response"]["position"])
        old = before[id]
        assert position is not None and old is not None and position.epoch != old.epoch
    last = stop_shouting(agent, ids, after=5)

    # Never a silent gap: shouts are contiguous except right before a recovered: false.
    for id in ids:
        events = [
            e
            for e in agent.of(id, "shout") + agent.of(id, "join", topic=room)
            if e["ev"] == "join" or e["from"] == "pub"
        ]
        events.sort(key=lambda e: (e["t"], e["ev"] != "join"))
        previous: int | None = None
        for event in events:
            if event["ev"] == "join":
                if not event["response"]["recovered"]:
                    previous = None  # told: anything may be missing before this point
                continue
            if previous is not None:
                assert event["n"] == previous + 1, f"{id}: a silent gap after {previous}"
            previous = event["n"]
        assert shouts(agent, id)[-1] == last


# -- a join is really subscribed ----------------------------------------------------------------


def wire(cluster: LocalCluster, node_name: str, user: str, stack: ExitStack) -> Client:
    node = by_name(cluster, node_name)
    token = issue_token(cluster.secret, user)
    url = f"ws://127.0.0.1:{node.port}/socket/websocket?token={token}&vsn=2.0.0"
    return stack.enter_context(Client.connect(url, timeout=8))


def test_a_join_answered_ok_hears_a_broadcast_sent_right_after_from_another_node(
    cluster: LocalCluster,
) -> None:
    """Under load (another node floods the API with broadcasts to a topic this node
    carries), each first join of a fresh topic on node2 is followed, as soon as its reply
    arrives, by a broadcast through node3's API: every one arrives."""
    node1, node3 = by_name(cluster, "node1"), by_name(cluster, "node3")
    stop = threading.Event()

    def flood() -> None:
        with httpx.Client(timeout=8) as client:
            while not stop.is_set():
                client.post(
                    f"{node1.url}/api/broadcast",
                    json={"topic": "room:busy", "event": "noise", "payload": {"pad": "x" * 500}},
                    headers={"Authorization": f"Bearer {API_KEY}"},
                )

    with ExitStack() as stack:
        listener = wire(cluster, "node2", unique_user("busy"), stack)
        listener.joined("room:busy")
        client = wire(cluster, "node2", unique_user("joiner"), stack)
        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        try:
            for i in range(30):
                topic = f"room:fresh-{uuid.uuid4().hex[:8]}-{i}"
                client.joined(topic)
                response = api(
                    node3,
                    "POST",
                    "/api/broadcast",
                    json={"topic": topic, "event": "hello", "payload": {"i": i}},
                )
                assert response.status_code == 202, response.text
                client.expect(f"hello on {topic}", lambda f, t=topic: f[2] == t and f[3] == "hello")
        finally:
            stop.set()
            flooder.join(10)
