"""Draining a node (SIGTERM) under a live two-node cluster behind nginx.

phoenix.js clients on both nodes share one room; a publisher on the surviving node shouts
a numbered message every 50 ms all along. SIGTERM node2 (SWITCHBOARD_DRAIN_PERIOD=2): its
readiness turns 503 at once, its clients are closed with 1012 over the drain period,
reconnect through nginx (which skips the draining node's 503) to node1 and rejoin; the
clients on node1 miss no shout; the drained users leave and come back in everyone's
presence; and the node exits 0 well within SWITCHBOARD_SHUTDOWN_TIMEOUT.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from switchboard.server.devcluster import LocalCluster
from tests.cluster.helpers import (
    addresses_by_node,
    by_name,
    diff_refs,
    log_events,
    one_each,
    ready,
    running_cluster,
    sockets_by_user,
    wait_for,
)
from tests.support.nodes import unique_user
from tests.support.phoenix_agent import Agent, has_shape, refs

DRAIN_PERIOD = 2.0
SHUTDOWN_TIMEOUT = 10.0
SHOUT_EVERY_MS = 50
SLOW_MS = 1000  # a push still running when the drain starts (under the 5 s per socket)
QUIET = 0.3  # after the last shout arrived: how long nothing more may arrive


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    env = {
        "SWITCHBOARD_DRAIN_PERIOD": str(DRAIN_PERIOD),
        "SWITCHBOARD_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
    }
    with running_cluster(env) as cluster:
        yield cluster


def shouts(agent: Agent, id: str, since: int = 0) -> list[int]:
    return [e["n"] for e in agent.of(id, "shout", since) if e["from"] == "pub"]


def test_draining_a_node_moves_its_clients_to_the_other_node_and_the_others_miss_no_shout(
    cluster: LocalCluster, agent: Agent
) -> None:
    node1, node2 = by_name(cluster, "node1"), by_name(cluster, "node2")
    addresses = addresses_by_node(cluster, 3)
    stayers, drained = ["pub", "s1", "s2"], ["d1", "d2", "d3"]
    placement = {**dict.fromkeys(stayers, "node1"), **dict.fromkeys(drained, "node2")}
    for index, id in enumerate(stayers):
        agent.connect(id, unique_user(id), addresses["node1"][index])
    for index, id in enumerate(drained):
        agent.connect(id, unique_user(id), addresses["node2"][index])
    wait_for(
        "every client on its node",
        lambda: all(
            sockets_by_user(node1).get(agent.users[id]) == [name] for id, name in placement.items()
        ),
    )
    room = f"room:{unique_user('drain')}"
    ids = [*stayers, *drained]
    for id in ids:
        agent.join(id, room)
    everyone = one_each([agent.users[id] for id in ids])
    before = {id: refs(agent.wait_list(id, room, has_shape(everyone), "all six")) for id in ids}

    agent.send("shout_every", id="pub", topic=room, ms=SHOUT_EVERY_MS, **{"from": "pub"})
    for id in ids:
        agent.wait_until(f"{id} gets shouts", lambda id=id: len(shouts(agent, id)) >= 3)

    # d1 has a slow push under way when the drain starts: it is answered before the close.
    slow_topic = f"test:{unique_user('slow')}"
    agent.join("d1", slow_topic)
    agent.send("push", id="d1", topic=slow_topic, event="sleep", payload={"ms": SLOW_MS}, seq=-1)
    # Frames of one socket are read in order: once this ping is answered, the node has the
    # slow push (which keeps running, on its own channel).
    assert agent.push("d1", room, "ping")["status"] == "ok"

    # -- SIGTERM node2 -----------------------------------------------------------------------
    since = agent.mark()
    signalled = time.monotonic()
    node2.process.send_signal(signal.SIGTERM)
    response = wait_for("node2 readiness 503", lambda: (r := ready(node2)).status_code == 503 and r)
    assert "draining" in response.json()["reason"], response.text
    slow_reply = agent.wait_event(
        "the slow push's reply", lambda e: e["ev"] == "reply" and e.get("seq") == -1, since
    )
    assert slow_reply["status"] == "ok", slow_reply

    for id in drained:
        close = agent.wait_event(
            f"{id} closed by the drain",
            lambda e, id=id: e["ev"] == "close" and e["id"] == id,
            since,
            timeout=DRAIN_PERIOD + 3.0,
        )
        assert close["code"] == 1012, close
        if id == "d1":
            assert close["t"] >= slow_reply["t"], "d1 was closed before its push was answered"
    for id in drained:
        agent.wait_event(
            f"{id} reconnects",
            lambda e, id=id: e["ev"] == "open" and e["id"] == id and e["conn"] == 2,
            since,
        )
        agent.wait_event(
            f"{id} rejoins",
            lambda e, id=id: (
                e["ev"] == "join" and e["id"] == id and e["topic"] == room and e["status"] == "ok"
            ),
            since,
        )
    wait_for(
        "the drained clients reconnected to node1",
        lambda: all(sockets_by_user(node1).get(agent.users[id]) == ["node1"] for id in drained),
    )
    try:
        code = node2.process.wait(max(0.1, signalled + SHUTDOWN_TIMEOUT - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the drained node still runs {SHUTDOWN_TIMEOUT} s after SIGTERM")
    assert code == 0, f"the drained node exited with {code}"
    assert any(e.get("event") == "drain_finished" for e in log_events(cluster, "node2"))

    # The drained users left (their old metas) and came back (new metas) for everyone.
    for observer in stayers:
        for id in drained:
            user, old = agent.users[id], before[observer][agent.users[id]]
            agent.wait_event(
                f"{observer} sees {id}'s old presence leave",
                lambda e, observer=observer, user=user, old=old: (
                    e["ev"] == "presence_leave"
                    and e["id"] == observer
                    and e["key"] == user
                    and [m["phx_ref"] for m in e["left"]["metas"]] == old
                ),
                since,
            )
    for id in ids:
        after = refs(agent.wait_list(id, room, has_shape(everyone), "all six again", since=since))
        for moved in drained:
            user = agent.users[moved]
            assert after[user] != before[id][user], f"{id} still lists {moved}'s old meta"

    for observer in stayers:
        leaves = diff_refs(agent, observer, room, "leaves", since)
        joins = diff_refs(agent, observer, room, "joins", since)
        for id in drained:
            user = agent.users[id]
            (old,) = before[observer][user]
            (new,) = refs(agent.list(observer, room))[user]
            assert (leaves[old], joins[new]) == (1, 1), (
                f"{observer} got {id}'s leave {leaves[old]} and its rejoin {joins[new]} times"
            )

    # Stop the publisher once the moved clients get shouts again; then count.
    rejoined_at = max(len(shouts(agent, id)) for id in stayers)
    for id in drained:
        agent.wait_until(
            f"{id} gets shouts after rejoining",
            lambda id=id: len(shouts(agent, id, since)) > 0 and shouts(agent, id)[-1] > rejoined_at,
        )
    agent.send("stop_shouting", id="pub")
    last = agent.wait_event("publisher stopped", lambda e: e["ev"] == "shouting_stopped")["last"]
    for id in ids:
        agent.wait_until(
            f"{id} gets the last shout {last}", lambda id=id: last in shouts(agent, id)
        )
    time.sleep(QUIET)
    for id in stayers:
        got = shouts(agent, id)
        missing = sorted(set(range(1, last + 1)) - set(got))
        assert not missing, f"{id} on the surviving node missed shouts {missing}"
        assert got == list(range(1, last + 1)), f"{id} got shouts out of order or twice: {got}"
    for id in drained:
        got = shouts(agent, id)
        assert len(got) == len(set(got)) and got == sorted(got), f"{id}: {got}"
        assert got[-1] == last
    for id in stayers:
        assert not agent.of(id, "close"), f"{id} on the surviving node lost its socket"
