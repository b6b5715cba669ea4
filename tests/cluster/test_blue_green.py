"""Blue-green switch of a live cluster behind nginx (``LocalCluster.blue_green``).

A new set of nodes starts, answers ``/health/ready``, nginx is reloaded onto it, and the old
set drains (SIGTERM: 1012 closes in batches over SWITCHBOARD_DRAIN_PERIOD). phoenix.js
clients spread over both old nodes reconnect through nginx to the new set and rejoin; none
is left broken, nobody's presence is listed twice or left behind by an old node, and a
shout still reaches every member exactly once. The foreground ``switchboard cluster``
runner does the same switch on SIGUSR1 and stops everything it started on SIGINT.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from switchboard.client import Client
from switchboard.presence.tracker import node_name
from switchboard.server.auth import issue_token
from switchboard.server.devcluster import LocalCluster, Node, free_port
from tests.cluster.helpers import (
    CANDIDATES,
    WAIT,
    addresses_by_node,
    agent_for,
    log_events,
    one_each,
    presences,
    running_cluster,
    runtime,
    sockets_by_user,
    wait_for,
)
from tests.support.nodes import unique_user
from tests.support.phoenix_agent import Agent, has_shape, refs, shape
from tests.support.processes import ROOT, Output, cmdline, descendants, descriptions

DRAIN_PERIOD = 1.0
SHUTDOWN_TIMEOUT = 10.0
SWITCH_BOUND = 40.0  # blue_green: two nodes started and readied, two drained and exited
QUIET = 0.3  # after the expected shouts arrived: how long nothing more may arrive
PER_NODE = 3


def _blue_green_in_thread(cluster: LocalCluster) -> list[Node]:
    """``cluster.blue_green()``, bounded: it blocks until the old nodes exited."""
    result: dict[str, Any] = {}

    def switch() -> None:
        try:
            result["new"] = cluster.blue_green()
        except BaseException as exc:  # reported below, not as an unhandled thread exception
            result["error"] = exc

    thread = threading.Thread(target=switch, name="blue-green", daemon=True)
    thread.start()
    thread.join(SWITCH_BOUND)
    if thread.is_alive():
        pytest.fail(f"blue_green() still runs after {SWITCH_BOUND} s")
    if "error" in result:
        raise result["error"]
    return list(result["new"])


def _shouts(agent: Agent, id: str, sender: str, n: int, since: int) -> int:
    return len(agent.of(id, "shout", since, **{"from": sender, "n": n}))


def _shout_reaches_everyone_once(
    agent: Agent, sender: str, ids: list[str], room: str, n: int
) -> None:
    since = agent.mark()
    agent.shout(sender, room, n)
    for id in ids:
        agent.wait_until(
            f"{id} gets {sender}'s shout {n}", lambda id=id: _shouts(agent, id, sender, n, since)
        )
    time.sleep(QUIET)  # bounded "nothing more arrives"
    counts = {id: _shouts(agent, id, sender, n, since) for id in ids}
    assert counts == dict.fromkeys(ids, 1), f"{sender}'s shout {n} arrived: {counts}"


def test_blue_green_switch_moves_every_client_to_the_new_nodes_and_leaves_none_broken() -> None:
    env = {
        "SWITCHBOARD_DRAIN_PERIOD": str(DRAIN_PERIOD),
        "SWITCHBOARD_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
    }
    with running_cluster(env) as cluster, agent_for(cluster) as agent:
        old = list(cluster.nodes)
        node1 = old[0]
        addresses = addresses_by_node(cluster, PER_NODE)
        placement = {
            f"{name}-c{index + 1}": (name, address)
            for name, found in addresses.items()
            for index, address in enumerate(found)
        }
        ids = list(placement)
        for id, (_, address) in placement.items():
            agent.connect(id, unique_user(id), address)
        wait_for(
            "every client on its old node",
            lambda: all(
                sockets_by_user(node1).get(agent.users[id]) == [name]
                for id, (name, _) in placement.items()
            ),
        )
        room = f"room:{unique_user('bluegreen')}"
        for id in ids:
            agent.join(id, room)
        everyone = one_each([agent.users[id] for id in ids])
        before = {id: refs(agent.wait_list(id, room, has_shape(everyone), "all six")) for id in ids}
        old_refs = {ref for listing in before.values() for rs in listing.values() for ref in rs}

        assert not any(agent.of(id, "close") for id in ids), "a client closed before the switch"

        # -- the switch ----------------------------------------------------------------------
        since = agent.mark()
        started = time.monotonic()
        new = _blue_green_in_thread(cluster)
        took = time.monotonic() - started

        assert [n.name for n in new] == ["node1-g2", "node2-g2"], new
        assert cluster.nodes == new
        assert not {n.port for n in new} & {n.port for n in old}
        for node in old:
            assert node.process.returncode == 0, (
                f"old {node.name} exited with {node.process.returncode}"
            )
            assert any(e.get("event") == "drain_finished" for e in log_events(cluster, node.name))
        for node in new:
            assert node.process.poll() is None, f"new {node.name} exited"
        new_names = {n.name for n in new}

        # Every client was closed with 1012 by its draining node, reconnected and rejoined
        # (or, if the switch never touched it, was never disconnected at all).
        def settled(id: str) -> bool:
            events = [e for e in agent.events[since:] if e["id"] == id]
            closes = [i for i, e in enumerate(events) if e["ev"] == "close"]
            if not closes:
                return not any(e["ev"] == "open" for e in events)
            after = events[closes[-1] + 1 :]
            return any(e["ev"] == "open" for e in after) and any(
                e["ev"] == "join" and e["topic"] == room and e["status"] == "ok" for e in after
            )

        for id in ids:
            agent.wait_until(f"{id} reconnected and rejoined", lambda id=id: settled(id))
        # nginx already sends new connections to the new set when the old one starts to
        # drain: each client's first reconnect attempt lands on a new node (no 503 from a
        # draining node, no failed attempt), and its one rejoin is accepted.
        for id in ids:
            history = [
                (e["ev"], e.get("code"), e.get("status"))
                for e in agent.events[since:]
                if e["id"] == id
                and (e["ev"] != "join" or e["topic"] == room)
                and e["ev"] in ("close", "error", "open", "join")
            ]
            assert history in (
                [],
                [("close", 1012, None), ("open", None, None), ("join", None, "ok")],
            ), f"{id}: {history}"
        assert any(agent.of(id, "close", since) for id in ids), "the drain closed nobody"

        # All the clients now sit on the new nodes, one socket each; the old nodes are gone
        # from the new nodes' view (peers), and no presence of theirs is left behind.
        wait_for(
            "each new node hears only the other new node",
            lambda: all(
                {node_name(p) for p in runtime(n)["peers"]} == new_names - {n.name} for n in new
            ),
        )
        wait_for(
            "every client's one socket on a new node, in every new node's view",
            lambda: all(
                len(located := sockets_by_user(n).get(agent.users[id], [])) == 1
                and located[0] in new_names
                for n in new
                for id in ids
            ),
            detail=lambda: [sockets_by_user(n) for n in new],
        )
        wait_for(
            "the new nodes hold exactly the six sockets",
            lambda: sum(runtime(n)["sockets"] for n in new) == len(ids),
            detail=lambda: {n.name: runtime(n)["sockets"] for n in new},
        )

        def fresh_metas_only(listing: list[dict[str, Any]]) -> bool:
            return shape(listing) == everyone and not any(
                m["phx_ref"] in old_refs for entry in listing for m in entry["metas"]
            )

        for id in ids:
            agent.wait_list(id, room, fresh_metas_only, "all six, fresh metas", since=since)
        for node in new:
            wait_for(
                f"{node.name} lists all six once",
                lambda node=node: (
                    {k: len(v["metas"]) for k, v in presences(node, room).items()} == everyone
                ),
            )

        _shout_reaches_everyone_once(agent, ids[0], ids, room, 1)
        for id in ids:
            listing = agent.list(id, room)
            assert fresh_metas_only(listing), f"{id} lists {listing}"

        # A brand new client, through nginx, lands on a new node and works.
        used = {address for _, address in placement.values()}
        fresh_address = next(a for a in CANDIDATES if a not in used)
        agent.connect("fresh", unique_user("fresh"), fresh_address)
        agent.join("fresh", room)
        fresh_user = agent.users["fresh"]
        located = wait_for(
            "the new client on a new node",
            lambda: sockets_by_user(new[0]).get(fresh_user),
        )
        assert len(located) == 1 and located[0] in new_names, located
        all_ids = [*ids, "fresh"]
        everyone_now = {**everyone, fresh_user: 1}
        for id in all_ids:
            agent.wait_list(id, room, has_shape(everyone_now), "all seven", since=since)
        _shout_reaches_everyone_once(agent, "fresh", all_ids, room, 2)
        wait_for(
            "the new nodes hold the seven sockets",
            lambda: sum(runtime(n)["sockets"] for n in new) == len(all_ids),
        )
        assert took < SWITCH_BOUND


# -- the foreground runner ----------------------------------------------------------------------


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url
    return port


def open_socket(description: dict[str, Any], user: str) -> Client:
    token = issue_token(description["secret"], user)
    url = f"ws://127.0.0.1:{port_of(description['nginx'])}/socket/websocket?token={token}&vsn=2.0.0"
    return Client.connect(url, timeout=WAIT)


def heartbeat(client: Client) -> None:
    reply = client.reply(client.heartbeat(), timeout=WAIT)
    assert reply[4]["status"] == "ok", reply


def serving_node(description: dict[str, Any]) -> str:
    response = httpx.get(f"{description['nginx']}/health/ready", timeout=WAIT)
    assert response.status_code == 200, response.text
    return node_name(response.json()["node"])


def test_sigusr1_makes_the_cluster_runner_switch_blue_green_and_sigint_stops_everything() -> None:
    port = free_port()
    runner = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "switchboard"),
            "cluster",
            "--nodes",
            "1",
            "--port",
            str(port),
            "--drain-period",
            str(DRAIN_PERIOD),
        ],
        # The test profile: /test/runtime below (the runner defaults to dev, for the demo page).
        env={
            **os.environ,
            "SWITCHBOARD_PROFILE": "test",
            "SWITCHBOARD_LIMITS": "off",
            "PYTHONUNBUFFERED": "1",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    output = Output(runner)
    started: dict[int, str] = {}
    run_dir: str | None = None
    try:
        up = output.wait(
            "cluster up",
            lambda lines: next((line for line in lines if line.startswith("cluster up")), None),
            20.0,
        )
        assert f"kill -USR1 {runner.pid} " in up, up
        first = descriptions(output.lines)[0]
        run_dir = first["logs"]
        assert list(first["nodes"]) == ["node1"], first
        assert port_of(first["nginx"]) == port
        started.update(descendants(runner.pid))
        assert serving_node(first) == "node1"

        ws = open_socket(first, unique_user("raw"))
        with ws:
            heartbeat(ws)
            os.kill(runner.pid, signal.SIGUSR1)
            second = output.wait(
                "the new description",
                lambda lines: (found := descriptions(lines))[1:] and found[1],
                SWITCH_BOUND,
            )
            # Whatever the drain closed is gone; the node the switch started is still there.
            started.update(descendants(runner.pid))
            assert "blue-green: starting a new set of nodes" in output.lines
            assert list(second["nodes"]) == ["node1-g2"], second
            assert {k: second[k] for k in ("nginx", "redis", "secret", "logs")} == {
                k: first[k] for k in ("nginx", "redis", "secret", "logs")
            }
            assert not accepts(port_of(first["nodes"]["node1"])), "the old node still listens"
            assert ws.closed(timeout=WAIT) == 1012, ws.frames

        assert serving_node(second) == "node1-g2"
        with open_socket(second, unique_user("fresh")) as fresh:
            heartbeat(fresh)
            fresh.joined("room:lobby", timeout=WAIT)
            new_node = second["nodes"]["node1-g2"]
            sockets = httpx.get(f"{new_node}/test/runtime", timeout=WAIT).json()["sockets"]
            assert sockets == 1, f"node1-g2 holds {sockets} sockets, not just the fresh one"

        # -- SIGINT: everything stops -----------------------------------------------------------
        os.kill(runner.pid, signal.SIGINT)
        try:
            code = runner.wait(20.0)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the runner still runs 20 s after SIGINT: {output.lines[-10:]}")
        output.join()
        assert code == 0, (code, output.errors[-20:])
        assert output.lines[-1] == "cluster stopped", output.lines[-10:]
        ports = {
            "nginx": port_of(first["nginx"]),
            "redis": port_of(first["redis"]),
            **{name: port_of(url) for name, url in first["nodes"].items()},
            **{name: port_of(url) for name, url in second["nodes"].items()},
        }
        listening = [name for name, p in ports.items() if accepts(p)]
        assert not listening, f"still accepting connections: {listening}"
        assert any("nginx" in cmd for cmd in started.values()), started
        assert any("redis-server" in cmd for cmd in started.values()), started
        assert sum("switchboard serve" in cmd for cmd in started.values()) == 2, started
        survivors = {pid: cmd for pid, cmd in started.items() if cmdline(pid) == cmd}
        assert not survivors, f"processes the runner started survive it: {survivors}"
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait(5)
        for pid, cmd in started.items():
            if cmdline(pid) == cmd:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        output.join()
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
