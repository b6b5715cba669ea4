"""redis-server SIGKILLed under a live two-node cluster, then restarted on the same port.

phoenix.js clients sit on both nodes (through nginx, from source addresses that land on each
node) in one room. Without Redis every node goes on serving its own clients (joins, pings,
shouts between two clients of the same node), logs the outage and answers readiness 503
with the reason; the nodes stop hearing each other, so after the node timeout each node's
clients see the other node's users leave. Once Redis is back, readiness is 200 again,
cross-node shouts flow, presence re-converges (including changes made during the outage),
and the node's asyncio tasks and threads are back to what they were before.

History is off here (``SWITCHBOARD_HISTORY_SIZE=0``): this is what topics without history
do through an outage. On a history topic shouts wait for Redis instead (see
``tests/cluster/test_no_message_lost.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from switchboard.server.devcluster import LocalCluster, Node
from tests.cluster.helpers import (
    addresses_by_node,
    api,
    by_name,
    log_events,
    one_each,
    presences,
    ready,
    revive,
    running_cluster,
    runtime,
    sockets_by_user,
    wait_for,
)
from tests.support.nodes import unique_user
from tests.support.phoenix_agent import Agent, has_shape

LEAVE_BOUND = 4.0 + 1.0 + 1.0  # node timeout + heartbeat + slack (see test_cluster.py)
# Redis reconnects with capped backoff: at most 5 s (the RedisBackend's backoff_max)
# after Redis is back, plus the connect itself.
RECOVERY = 5.0 + 3.0
# Tasks after recovery against before the outage, with the same sockets and channels open:
# both counts include the /test/runtime request serving them; +-1 leaves room for one
# short-lived presence task (an untrack or a replication ask) still finishing when we look.
# The set of task kinds (coroutine names) must be the same, and the thread count (the actors'
# threads, the main thread) exactly the same: an outage must start no thread that stays.
TASK_TOLERANCE = 1


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with running_cluster({"SWITCHBOARD_HISTORY_SIZE": "0"}) as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def whole_cluster(cluster: LocalCluster) -> None:
    revive(cluster)


def shout_reaches(agent: Agent, sender: str, receivers: list[str], topic: str, n: int) -> None:
    agent.shout(sender, topic, n)
    for receiver in receivers:
        agent.wait_event(
            f"{receiver} gets shout {n} from {sender}",
            lambda e, receiver=receiver: (
                e["ev"] == "shout" and e["id"] == receiver and e["from"] == sender and e["n"] == n
            ),
        )


def test_nodes_serve_local_clients_through_a_redis_outage_and_recover_everything_without_leaks(
    cluster: LocalCluster, agent: Agent
) -> None:
    node1, node2 = by_name(cluster, "node1"), by_name(cluster, "node2")
    addresses = addresses_by_node(cluster, 3)
    room, side_room = f"room:{unique_user('outage')}", f"room:{unique_user('local')}"
    placement = {"a1": "node1", "a2": "node1", "b1": "node2", "b2": "node2"}
    for index, (id, name) in enumerate(placement.items()):
        agent.connect(id, unique_user(id), addresses[name][index % 2])
    wait_for(
        "every client on its node",
        lambda: all(
            sockets_by_user(node1).get(agent.users[id]) == [name] for id, name in placement.items()
        ),
    )
    ids = list(placement)
    for id in ids:
        agent.join(id, room)
    everyone = one_each([agent.users[id] for id in ids])
    for id in ids:
        agent.wait_list(id, room, has_shape(everyone), "all four present")
    shout_reaches(agent, "a1", ids, room, 1)
    baseline = {node.name: runtime(node) for node in (node1, node2)}

    # -- Redis dies --------------------------------------------------------------------------
    assert cluster.redis is not None
    since = agent.mark()
    cluster.redis.kill()
    cluster.redis.wait(5)
    for node in (node1, node2):
        response = wait_for(
            f"{node.name} readiness 503",
            lambda node=node: (r := ready(node)).status_code == 503 and r,
        )
        reason = response.json()["reason"]
        assert "pub/sub" in reason, f"{node.name}'s readiness reason: {reason!r}"
        wait_for(
            f"{node.name} logs the outage",
            lambda node=node: [
                e
                for e in log_events(cluster, node.name)
                if e.get("event") == "pubsub_down" and e.get("level") == "warning"
            ],
        )

    # Each node still serves its own clients.
    for id in ("a1", "b1"):
        assert agent.push(id, room, "ping", {"still": id})["status"] == "ok"
        agent.join(id, side_room)
    shout_reaches(agent, "a1", ["a1", "a2"], room, 2)
    shout_reaches(agent, "b1", ["b1", "b2"], room, 2)
    for id in ("a1", "b1"):
        agent.send("leave", id=id, topic=side_room)
        agent.wait_event(
            f"{id} left the side room",
            lambda e, id=id: e["ev"] == "left" and e["id"] == id and e["status"] == "ok",
            since,
        )

    # Presence changes on node2 during the outage: b2 leaves, a new client joins there.
    agent.send("leave", id="b2", topic=room)
    agent.connect("c", unique_user("c"), addresses["node2"][2])
    agent.join("c", room)
    # The nodes no longer hear each other: after the node timeout each side's clients see
    # the other side's users leave.
    users = agent.users
    agent.wait_list(
        "a1",
        room,
        has_shape(one_each([users["a1"], users["a2"]])),
        "node2's users gone",
        timeout=LEAVE_BOUND + 1.0,
        since=since,
    )
    agent.wait_list(
        "b1",
        room,
        has_shape(one_each([users["b1"], users["c"]])),
        "node1's users gone",
        timeout=LEAVE_BOUND + 1.0,
        since=since,
    )

    # -- Redis is back (same port) -------------------------------------------------------------
    since = agent.mark()
    cluster.restart_redis()
    for node in (node1, node2):
        wait_for(
            f"{node.name} ready again",
            lambda node=node: ready(node).status_code == 200,
            timeout=RECOVERY,
        )
        wait_for(
            f"{node.name} logs the reconnection",
            lambda node=node: any(
                e.get("event") == "pubsub_up" and "reconnected" in str(e.get("msg"))
                for e in log_events(cluster, node.name)
            ),
            timeout=2.0,
        )
    shout_reaches(agent, "a1", ["a1", "a2", "b1", "c"], room, 3)
    shout_reaches(agent, "c", ["a1", "a2", "b1", "c"], room, 3)
    now_present = one_each([users[id] for id in ("a1", "a2", "b1", "c")])
    for id in ("a1", "a2", "b1", "c"):
        agent.wait_list(id, room, has_shape(now_present), "presence re-converged", since=since)

    # The connections topic (what the per-user limit counts) re-converges too.
    expected = {users[id]: [name] for id, name in {**placement, "c": "node2"}.items()}
    for node in (node1, node2):
        wait_for(
            f"{node.name} lists every socket of both nodes again",
            lambda node=node: (
                {u: h for u, h in sockets_by_user(node).items() if u in expected} == expected
            ),
        )

    # Back to the pre-outage set of sockets and channels: no task or thread is left over.
    agent.send("disconnect", id="c")
    agent.join("b2", room)
    for id in ids:
        agent.wait_list(id, room, has_shape(everyone), "the original four again")
    # A newcomer on node1 gets a presence_state (cached per topic) with everyone in it.
    agent.connect("late", unique_user("late"), addresses["node1"][2])
    agent.join("late", room)
    with_late = {**everyone, users["late"]: 1}
    agent.wait_list("late", room, has_shape(with_late), "the newcomer sees everyone")
    agent.send("disconnect", id="late")
    for id in ids:
        agent.wait_list(id, room, has_shape(everyone), "the newcomer gone")
    for node in (node1, node2):
        before = baseline[node.name]

        def back(node: Node = node, before: dict[str, Any] = before) -> bool:
            now = runtime(node)
            return (
                abs(now["tasks"] - before["tasks"]) <= TASK_TOLERANCE
                and now["threads"] == before["threads"]
                and now["task_names"] == before["task_names"]
            )

        wait_for(
            f"{node.name}'s tasks and threads back to the pre-outage {before}",
            back,
            detail=lambda node=node: runtime(node),  # type: ignore[misc]
        )


def test_presence_changes_made_during_a_short_redis_outage_reach_the_other_node(
    cluster: LocalCluster, agent: Agent
) -> None:
    """An outage shorter than the node timeout: no node-down, the dropped deltas are resynced."""
    node1, node2 = by_name(cluster, "node1"), by_name(cluster, "node2")
    addresses = addresses_by_node(cluster, 3)
    room = f"room:{unique_user('short')}"
    agent.connect("a", unique_user("a"), addresses["node1"][0])
    for index, id in enumerate(("b", "gone")):
        agent.connect(id, unique_user(id), addresses["node2"][index])
    for id in ("a", "b", "gone"):
        agent.join(id, room)
    users = agent.users
    three = one_each([users["a"], users["b"], users["gone"]])
    for id in ("a", "b", "gone"):
        agent.wait_list(id, room, has_shape(three), "all three present")

    assert cluster.redis is not None
    cluster.redis.kill()
    cluster.redis.wait(5)
    wait_for("node2 sees Redis gone", lambda: ready(node2).status_code == 503)
    # On node2, without Redis: one user leaves the room, a new one connects and joins.
    agent.send("leave", id="gone", topic=room)
    agent.wait_event("leave reply", lambda e: e["ev"] == "left" and e["id"] == "gone")
    agent.connect("new", unique_user("new"), addresses["node2"][2])
    agent.join("new", room)
    cluster.restart_redis()
    for node in (node1, node2):
        wait_for(f"{node.name} ready again", lambda node=node: ready(node).status_code == 200)

    now = one_each([users["a"], users["b"], users["new"]])
    for id in ("a", "b", "new"):
        agent.wait_list(id, room, has_shape(now), "the outage's changes everywhere")
    for node in (node1, node2):
        wait_for(
            f"{node.name}'s presence API agrees",
            lambda node=node: {k: len(v["metas"]) for k, v in presences(node, room).items()} == now,
        )
    agent.send("disconnect", id="new")


def test_a_cache_delete_made_during_a_redis_outage_leaves_no_stale_value_on_other_nodes(
    cluster: LocalCluster,
) -> None:
    """The delete's cluster-wide invalidation cannot travel while Redis is down; once it is
    back, the other node must not go on serving the deleted value (it has no TTL)."""
    node1, node2 = by_name(cluster, "node1"), by_name(cluster, "node2")
    key = f"outage-{unique_user('key')}"
    for node in (node1, node2):
        response = api(node, "PUT", f"/api/cache/{key}", json={"value": "v1"})
        assert response.status_code == 201, response.text
    assert cluster.redis is not None
    cluster.redis.kill()
    cluster.redis.wait(5)
    for node in (node1, node2):
        wait_for(f"{node.name} sees Redis gone", lambda node=node: ready(node).status_code == 503)
    deleted = api(node1, "DELETE", f"/api/cache/{key}")
    assert deleted.status_code == 200 and deleted.json() == {"removed": 1}, deleted.text
    cluster.restart_redis()
    for node in (node1, node2):
        wait_for(f"{node.name} ready again", lambda node=node: ready(node).status_code == 200)
    wait_for(
        "node2 stops serving the value deleted on node1 during the outage",
        lambda: api(node2, "GET", f"/api/cache/{key}").status_code == 404,
        timeout=3.0,
        detail=lambda: api(node2, "GET", f"/api/cache/{key}").text,
    )
