"""A real cluster (redis-server, two nodes, nginx) driven by real phoenix.js clients.

Clients connect through nginx from distinct loopback source addresses, which nginx's
``hash $remote_addr consistent`` spreads over the nodes; :func:`addresses_by_node` tells
which address lands where, so every test has clients on both nodes. One cluster serves the
module (SWITCHBOARD_USER_SOCKET_LIMIT=2 for the per-user limit test; every other test uses
one socket per user). The SIGKILL test restarts the node it killed, so the tests after it
run on a cluster whose node2 is a new incarnation.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from switchboard.client import Client, Refused
from switchboard.server.auth import issue_token
from switchboard.server.devcluster import LocalCluster, Node
from tests.cluster.helpers import (
    WAIT,
    addresses_by_node,
    api,
    by_name,
    diff_refs,
    one_each,
    presences,
    revive,
    routed_to,
    running_cluster,
    runtime,
    sockets_by_user,
    wait_for,
)
from tests.support.nodes import unique_user
from tests.support.phoenix_agent import Agent, has_shape, refs, shape

HEARTBEAT = 1.0  # SWITCHBOARD_PRESENCE_HEARTBEAT (default)
NODE_TIMEOUT = 4.0  # SWITCHBOARD_NODE_TIMEOUT (default)
# A killed node's presences leave once it has been silent NODE_TIMEOUT, noticed at the next
# heartbeat tick; one more second covers the replication and the client's own processing.
LEAVE_BOUND = NODE_TIMEOUT + HEARTBEAT + 1.0
QUIET = 0.3  # after a sentinel arrived: how long nothing more may arrive
USER_LIMIT = 2


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with running_cluster({"SWITCHBOARD_USER_SOCKET_LIMIT": str(USER_LIMIT)}) as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def whole_cluster(cluster: LocalCluster) -> None:
    revive(cluster)


@pytest.fixture
def topic() -> str:
    return f"room:{unique_user('cluster')}"


def spread(agent: Agent, cluster: LocalCluster, ids_by_node: dict[str, list[str]]) -> None:
    """Connect the clients named per node from addresses nginx sends there; check they did."""
    addresses = addresses_by_node(cluster, max(len(ids) for ids in ids_by_node.values()))
    for name, ids in ids_by_node.items():
        for id, address in zip(ids, addresses[name], strict=False):
            agent.connect(id, unique_user(id), address)
    expected = {agent.users[id]: [name] for name, ids in ids_by_node.items() for id in ids}
    wait_for(
        f"every client on its node: {expected}",
        lambda: all(
            {user: landed.get(user) for user in expected} == expected
            for landed in (sockets_by_user(node) for node in cluster.nodes)
        ),
    )


def join_in_turn(agent: Agent, ids: list[str], topic: str) -> None:
    """Join one client at a time, each once everyone before it sees it present."""
    for index, id in enumerate(ids):
        agent.join(id, topic)
        present = one_each([agent.users[i] for i in ids[: index + 1]])
        for other in ids[: index + 1]:
            agent.wait_list(other, topic, has_shape(present), f"{index + 1} users present")


def sentinel_shout(agent: Agent, sender: str, ids: list[str], topic: str, n: int) -> None:
    """A shout every client must receive; then a short quiet time for stragglers."""
    agent.shout(sender, topic, n)
    for id in ids:
        agent.wait_event(
            f"{id} gets the sentinel shout {n}",
            lambda e, id=id: (
                e["ev"] == "shout" and e["id"] == id and e["from"] == sender and e["n"] == n
            ),
        )
    time.sleep(QUIET)


def test_nginx_sends_each_source_address_to_one_node_and_some_to_each(
    cluster: LocalCluster,
) -> None:
    """The precondition of this module: clients from chosen addresses land on chosen nodes."""
    addresses = addresses_by_node(cluster, 3)
    assert set(addresses) == {"node1", "node2"}
    for name, found in addresses.items():
        for address in found:
            assert [routed_to(cluster, address) for _ in range(3)] == [name] * 3, (
                f"nginx's address hash is not sticky for {address}"
            )


# -- (a) shouts and presence across nodes -------------------------------------------------------


def test_clients_on_both_nodes_get_every_shout_once_and_one_presence_list_with_each_diff_once(
    cluster: LocalCluster, agent: Agent, topic: str
) -> None:
    spread(agent, cluster, {"node1": ["n1a", "n1b"], "node2": ["n2a", "n2b"]})
    ids = ["n1a", "n2a", "n1b", "n2b"]  # joining in turn, alternating nodes
    join_in_turn(agent, ids, topic)

    for id in ids:
        agent.shout(id, topic, 1)
    for receiver in ids:
        agent.wait_until(
            f"{receiver} gets all four shouts",
            lambda receiver=receiver: {e["from"] for e in agent.of(receiver, "shout")} == set(ids),
        )
    sentinel_shout(agent, "n2b", ids, topic, 2)
    for receiver in ids:
        got = Counter((e["from"], e["n"]) for e in agent.of(receiver, "shout"))
        want = Counter({**{(id, 1): 1 for id in ids}, ("n2b", 2): 1})
        assert got == want, f"{receiver} got shouts {dict(got)}; each exactly once expected"

    users = [agent.users[id] for id in ids]
    listings = {id: agent.list(id, topic) for id in ids}
    assert all(shape(listing) == one_each(users) for listing in listings.values()), listings
    assert len({str(refs(listing)) for listing in listings.values()}) == 1, (
        f"clients disagree on the phx_refs: {listings}"
    )
    for node in cluster.nodes:
        api_refs = {
            k: sorted(m["phx_ref"] for m in v["metas"]) for k, v in presences(node, topic).items()
        }
        assert api_refs == refs(listings["n1a"]), f"{node.name}'s presence API disagrees"

    # Each client learnt of each user once, whichever node the user was on (never once per
    # node): from its state, or from a diff after it (its own join among them, when the state
    # was built before it), in the order they joined.
    for id in ids:
        [state] = [e["data"] for e in agent.of(id, "frame", topic=topic, event="presence_state")]
        diffs = [e["data"] for e in agent.of(id, "frame", topic=topic, event="presence_diff")]
        joined = [key for diff in diffs for key in diff["joins"]]
        assert joined == [user for user in users if user not in state], (
            f"{id} got presence_diff joins {joined} after a state of {list(state)}; "
            f"expected each of the others of {users} once"
        )
        assert all(diff["leaves"] == {} for diff in diffs), diffs
        assert not agent.of(id, "presence_leave"), "nobody left"


# -- (b) a node killed, then restarted ----------------------------------------------------------


def test_a_killed_nodes_users_leave_in_time_rejoin_on_the_survivor_and_its_restart_duplicates_none(
    cluster: LocalCluster, agent: Agent, topic: str
) -> None:
    spread(agent, cluster, {"node1": ["n1a", "n1b"], "node2": ["n2a", "n2b"]})
    ids = ["n1a", "n1b", "n2a", "n2b"]
    survivors, orphans = ["n1a", "n1b"], ["n2a", "n2b"]
    for id in ids:
        agent.join(id, topic)
    users = [agent.users[id] for id in ids]
    before = refs(agent.wait_list("n1a", topic, has_shape(one_each(users)), "all four present"))
    for id in ids:
        agent.wait_list(id, topic, has_shape(one_each(users)), "all four present")

    node2 = by_name(cluster, "node2")
    since = agent.mark()
    killed_at = time.monotonic()
    node2.process.kill()
    node2.process.wait(5)

    # The survivors' clients see each of node2's users leave (its old meta) within the bound.
    for observer in survivors:
        for orphan in orphans:
            user, old_ref = agent.users[orphan], before[agent.users[orphan]][0]
            agent.wait_event(
                f"{observer} sees {orphan}'s old presence leave",
                lambda e, observer=observer, user=user, old_ref=old_ref: (
                    e["ev"] == "presence_leave"
                    and e["id"] == observer
                    and e["topic"] == topic
                    and e["key"] == user
                    and [m["phx_ref"] for m in e["left"]["metas"]] == [old_ref]
                ),
                since,
                timeout=max(0.1, killed_at + LEAVE_BOUND - time.monotonic()),
            )
    left_after = time.monotonic() - killed_at
    assert left_after <= LEAVE_BOUND

    # node2's clients lost their socket, reconnected through nginx to node1 and rejoined.
    for orphan in orphans:
        close = agent.wait_event(
            f"{orphan} loses its socket",
            lambda e, orphan=orphan: e["ev"] == "close" and e["id"] == orphan,
            since,
        )
        assert close["code"] != 1000, close
        agent.wait_event(
            f"{orphan} reconnects",
            lambda e, orphan=orphan: e["ev"] == "open" and e["id"] == orphan and e["conn"] == 2,
            since,
        )
        agent.wait_event(
            f"{orphan} rejoins",
            lambda e, orphan=orphan: (
                e["ev"] == "join"
                and e["id"] == orphan
                and e["topic"] == topic
                and e["status"] == "ok"
            ),
            since,
        )
    node1 = by_name(cluster, "node1")
    wait_for(
        "node2's users connected on node1 only",
        lambda: all(sockets_by_user(node1).get(agent.users[o]) == ["node1"] for o in orphans),
    )
    for id in ids:
        after = agent.wait_list(
            id, topic, has_shape(one_each(users)), "all four again", since=since
        )
        for orphan in orphans:
            user = agent.users[orphan]
            assert refs(after)[user] != before[user], f"{id} still lists {orphan}'s dead meta"
    for id in survivors:
        assert not agent.of(id, "close"), f"{id} on the surviving node lost its socket"
        leaves = diff_refs(agent, id, topic, "leaves", since)
        for orphan in orphans:
            old_ref = before[agent.users[orphan]][0]
            assert leaves[old_ref] == 1, f"{id} got {orphan}'s leave {leaves[old_ref]} times"

    # Restart node2 under the same name (and port, so nginx finds it): nothing duplicates.
    restarted = cluster.start_node("node2", node2.port)
    wait_for(
        "both nodes hear the new node2",
        lambda: (
            all(len(runtime(n)["peers"]) == 1 for n in cluster.nodes)
            and any(p.startswith("node2:") for p in runtime(node1)["peers"])
        ),
    )
    spread(agent, cluster, {"node1": [], "node2": ["late"]})
    agent.join("late", topic)
    everyone = one_each([*users, agent.users["late"]])
    final = agent.wait_list("late", topic, has_shape(everyone), "five users, one meta each")
    for id in ids:
        assert refs(agent.wait_list(id, topic, has_shape(everyone), "five users")) == refs(final)
    sentinel_shout(agent, "late", [*ids, "late"], topic, 1)
    for id in [*ids, "late"]:
        assert shape(agent.list(id, topic)) == everyone, f"{id} lists a duplicate"
    for node in (node1, restarted):
        listed = presences(node, topic)
        assert {k: len(v["metas"]) for k, v in listed.items()} == everyone, node.name
        connections = presences(node, "connections")
        for key, presence in connections.items():
            node_refs = [m["phx_ref"] for m in presence["metas"]]
            assert len(node_refs) == len(set(node_refs)), f"duplicate metas for {key}"
        mine = {user: hosts for user, hosts in sockets_by_user(node).items() if user in everyone}
        assert all(len(hosts) == 1 for hosts in mine.values()), mine


def test_a_node_restarted_within_the_node_timeout_replaces_its_old_incarnation_at_once(
    cluster: LocalCluster, agent: Agent, topic: str
) -> None:
    spread(agent, cluster, {"node1": ["watcher"], "node2": ["mover"]})
    agent.join("watcher", topic)
    agent.join("mover", topic)
    both = one_each([agent.users["watcher"], agent.users["mover"]])
    old_ref = refs(agent.wait_list("watcher", topic, has_shape(both), "both present"))[
        agent.users["mover"]
    ][0]

    node2 = by_name(cluster, "node2")
    since = agent.mark()
    killed_at = time.monotonic()
    node2.process.kill()
    node2.process.wait(5)
    cluster.start_node("node2", node2.port)
    # node1 hears the new node2 and drops the old one's presences at once: before the old
    # one could have timed out, which takes NODE_TIMEOUT from its last heartbeat (sent at
    # most HEARTBEAT before the kill).
    agent.wait_event(
        "the watcher sees the mover's old presence leave",
        lambda e: (
            e["ev"] == "presence_leave"
            and e["id"] == "watcher"
            and e["key"] == agent.users["mover"]
            and [m["phx_ref"] for m in e["left"]["metas"]] == [old_ref]
        ),
        since,
        timeout=max(0.1, killed_at + NODE_TIMEOUT - HEARTBEAT - time.monotonic()),
    )
    agent.wait_event(
        "the mover rejoins",
        lambda e: e["ev"] == "join" and e["id"] == "mover" and e["status"] == "ok",
        since,
    )
    for id in ("watcher", "mover"):
        agent.wait_list(id, topic, has_shape(both), "both present again", since=since)
    sentinel_shout(agent, "mover", ["watcher", "mover"], topic, 1)
    for id in ("watcher", "mover"):
        assert shape(agent.list(id, topic)) == both
    assert diff_refs(agent, "watcher", topic, "leaves")[old_ref] == 1
    for node in cluster.nodes:
        assert {k: len(v["metas"]) for k, v in presences(node, topic).items()} == both


# -- (c) the per-user socket limit --------------------------------------------------------------


def _socket_url(cluster: LocalCluster, node: Node, user: str) -> str:
    token = issue_token(cluster.secret, user)
    return f"ws://127.0.0.1:{node.port}/socket/websocket?token={token}&vsn=2.0.0"


def _refused_status(cluster: LocalCluster, node: Node, user: str) -> int | None:
    try:
        with Client.connect(_socket_url(cluster, node, user), timeout=WAIT):
            return None
    except Refused as exc:
        return exc.status


def test_the_per_user_socket_limit_counts_the_users_sockets_on_every_node(
    cluster: LocalCluster,
) -> None:
    user = unique_user("limited")
    node1, node2 = by_name(cluster, "node1"), by_name(cluster, "node2")
    with Client.connect(_socket_url(cluster, node1, user), timeout=WAIT):
        with Client.connect(_socket_url(cluster, node2, user), timeout=WAIT):
            for node in (node1, node2):
                wait_for(
                    f"{node.name} counts one socket of the user on each node",
                    lambda node=node: sockets_by_user(node).get(user) == ["node1", "node2"],
                )
            # Admission hears of the other node's socket by the connections topic's diff,
            # up to one presence window after the list above shows it.
            for node in (node1, node2):
                wait_for(
                    f"a third socket on {node.name} refused ({USER_LIMIT} open cluster-wide)",
                    lambda node=node: _refused_status(cluster, node, user) == 403,
                )
        # The one on node2 closed: node1 hears of it and takes a second socket again.
        wait_for(
            "node1 sees the user's node2 socket gone",
            lambda: sockets_by_user(node1).get(user) == ["node1"],
        )
        wait_for(
            "node1 admits a second socket of the user again",
            lambda: _refused_status(cluster, node1, user) is None,
        )


# -- (d) disconnect broadcast -------------------------------------------------------------------


def test_a_disconnect_broadcast_closes_the_users_sockets_on_both_nodes_with_1001(
    cluster: LocalCluster, agent: Agent
) -> None:
    addresses = addresses_by_node(cluster, 2)
    user = unique_user("kicked")
    agent.connect("k1", user, addresses["node1"][0])
    agent.connect("k2", user, addresses["node2"][0])
    agent.connect("by1", unique_user("bystander"), addresses["node1"][1])
    agent.connect("by2", unique_user("bystander"), addresses["node2"][1])
    wait_for(
        "the user has one socket on each node",
        lambda: all(sockets_by_user(n).get(user) == ["node1", "node2"] for n in cluster.nodes),
        detail=lambda: ([sockets_by_user(n) for n in cluster.nodes], agent.events),
    )
    kick_topic = f"test:{unique_user('kick')}"
    agent.join("k1", kick_topic)
    since = agent.mark()
    agent.send("push", id="k1", topic=kick_topic, event="kick", payload={}, seq=0)
    for id in ("k1", "k2"):
        close = agent.wait_event(
            f"{id} closed", lambda e, id=id: e["ev"] == "close" and e["id"] == id, since
        )
        assert close["code"] == 1001, close
        agent.wait_event(  # phoenix.js comes back after a 1001
            f"{id} reconnects",
            lambda e, id=id: e["ev"] == "open" and e["id"] == id and e["conn"] == 2,
            since,
        )
    for id in ("by1", "by2"):
        assert not agent.of(id, "close"), f"the bystander {id} was disconnected too"


# -- (e) cache invalidation ---------------------------------------------------------------------


def test_a_cache_delete_on_one_node_reaches_every_node(cluster: LocalCluster) -> None:
    node1, node2 = by_name(cluster, "node1"), by_name(cluster, "node2")
    key = f"cluster-{unique_user('key')}"
    for node in (node1, node2):
        response = api(node, "PUT", f"/api/cache/{key}", json={"value": {"on": node.name}})
        assert response.status_code == 201, response.text
        got = api(node, "GET", f"/api/cache/{key}")
        assert got.status_code == 200 and got.json()["value"] == {"on": node.name}, got.text
    deleted = api(node1, "DELETE", f"/api/cache/{key}")
    assert deleted.status_code == 200 and deleted.json() == {"removed": 1}, deleted.text
    assert api(node1, "GET", f"/api/cache/{key}").status_code == 404
    wait_for(
        "node2 forgets the key deleted on node1",
        lambda: api(node2, "GET", f"/api/cache/{key}").status_code == 404,
        timeout=3.0,
    )


# -- (f) connections by node --------------------------------------------------------------------


def test_every_node_knows_how_many_sockets_each_node_holds(
    cluster: LocalCluster, agent: Agent
) -> None:
    spread(agent, cluster, {"node1": ["c1", "c2"], "node2": ["c3"]})
    mine = set(agent.users.values())

    def counts(node: Node) -> Counter[str]:
        return Counter(
            host for user, hosts in sockets_by_user(node).items() if user in mine for host in hosts
        )

    for node in cluster.nodes:
        assert counts(node) == Counter({"node1": 2, "node2": 1}), node.name

    # All connections, not just this test's: each node's count of a node's metas is that
    # node's own socket count.
    def agreed() -> bool:
        held = {n.name: runtime(n)["sockets"] for n in cluster.nodes}
        seen = [
            Counter(host for hosts in sockets_by_user(n).values() for host in hosts)
            for n in cluster.nodes
        ]
        return all({name: c.get(name, 0) for name in held} == held for c in seen)

    wait_for("every node's view of the connections matches the socket counts", agreed)
