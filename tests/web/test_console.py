"""The operator's console (``/dashboard``) in headless Chromium against a real 2-node cluster
(redis-server, two nodes, nginx): tests/web/console.mjs drives the page, this module starts
the cluster and does what the script asks of it on the way (freeze a node with SIGSTOP,
drain one, kill Redis...). One cluster serves every test here; the tests that change it put
it back.

Screenshots are kept under the tmp folder each test prints.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from switchboard.presence.tracker import node_name
from switchboard.server.auth import issue_token
from switchboard.server.devcluster import LocalCluster
from tests.cluster.helpers import by_name, revive, running_cluster, wait_for
from tests.support.browser import browser_tools, run_browser_steps
from tests.support.processes import running_server

SCRIPT = Path(__file__).with_name("console.mjs")
ADMIN_TOKEN = "console-admin-" + os.urandom(8).hex()
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "henry", "iris", "jack"]
USERS += ["kate", "user0", "user1", "user2", "user3", "a-user-with-a-rather-long-name"]
CONSOLE_ENV = {
    "SWITCHBOARD_ADMIN_TOKEN": ADMIN_TOKEN,
    "SWITCHBOARD_NODE_TIMEOUT": "2",  # a frozen node is lost after ~3 s, not ~5 s
    "SWITCHBOARD_DRAIN_PERIOD": "4",
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with running_cluster(CONSOLE_ENV) as running:
        yield running


def drive(
    base_url: str,
    secret: str,
    nodes: dict[str, str],
    scenario: str,
    screenshots: Path,
    actions: dict[str, Callable[[], object]] | None = None,
) -> None:
    node, chromium = browser_tools("playwright-core", "ws")
    env = {
        "BASE_URL": base_url,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "NODES": json.dumps(nodes),
        "TOKENS": json.dumps({user: issue_token(secret, user) for user in USERS}),
        "SCENARIO": scenario,
        "CHROMIUM": chromium,
        "SCREENSHOT_DIR": str(screenshots),
    }
    print(f"screenshots: {screenshots}")
    code, output = run_browser_steps(node, SCRIPT, env, actions or {})
    assert code == 0, output
    assert "PASS" in output, output


def drive_cluster(
    cluster: LocalCluster,
    scenario: str,
    screenshots: Path,
    actions: dict[str, Callable[[], object]] | None = None,
) -> None:
    nodes = {node.name: node.url for node in cluster.nodes}
    drive(nodes["node1"], cluster.secret, nodes, scenario, screenshots, actions)


def signal_node(cluster: LocalCluster, name: str, sig: int) -> Callable[[], None]:
    return lambda: by_name(cluster, name).process.send_signal(sig)


def test_the_console_lists_connections_across_the_cluster_and_disconnects_a_socket_or_a_user(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    drive_cluster(cluster, "connections", tmp_path)


def test_the_console_lists_every_topic_opens_one_and_broadcasts_to_it(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    drive_cluster(cluster, "topics", tmp_path)


def test_the_charts_have_a_time_axis_tooltips_and_history_that_survives_a_reload(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    drive_cluster(cluster, "charts", tmp_path)


def test_the_console_is_usable_at_phone_width_and_keeps_node_card_labels_whole_at_1440px(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    drive_cluster(cluster, "layout", tmp_path)


def test_a_frozen_node_is_named_missing_instead_of_holding_up_a_cluster_wide_list(
    cluster: LocalCluster,
) -> None:
    node1, node2 = by_name(cluster, "node1"), by_name(cluster, "node2")
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    node2.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        answer = httpx.get(f"{node1.url}/api/console/connections", headers=headers, timeout=10)
        took = time.monotonic() - started
    finally:
        node2.process.send_signal(signal.SIGCONT)
    assert answer.status_code == 200, answer.text
    assert [node_name(n) for n in answer.json()["missing"]] == ["node2"]
    assert took < 4, f"the list waited {took:.1f} s for a frozen node"
    wait_for(
        "node2 heard again",
        lambda: (
            not (view := httpx.get(f"{node1.url}/api/console/cluster", headers=headers).json())[
                "lost"
            ]
            and len(view["nodes"]) == 2
        ),
        timeout=15,
    )


def test_a_frozen_node_shows_as_lost_with_what_it_held_until_it_returns_or_is_dismissed(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    try:
        drive_cluster(
            cluster,
            "frozen",
            tmp_path,
            {
                "freeze_node2": signal_node(cluster, "node2", signal.SIGSTOP),
                "thaw_node2": signal_node(cluster, "node2", signal.SIGCONT),
            },
        )
    finally:
        by_name(cluster, "node2").process.send_signal(signal.SIGCONT)


def test_alerts_show_redis_down_and_an_actor_restarting_in_a_loop_while_they_last(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    def kill_redis() -> None:
        assert cluster.redis is not None
        cluster.redis.kill()
        cluster.redis.wait(5)

    def crash_cache_actor() -> None:
        node1 = by_name(cluster, "node1")
        response = httpx.post(f"{node1.url}/test/actors/cache/fault", timeout=5)
        assert response.status_code == 200, response.text

    try:
        drive_cluster(
            cluster,
            "alerts",
            tmp_path,
            {
                "kill_redis": kill_redis,
                "restart_redis": cluster.restart_redis,
                "crash_cache_actor": crash_cache_actor,
            },
        )
    finally:
        revive(cluster)


def test_a_draining_node_shows_as_draining_until_it_is_gone_and_is_not_taken_for_lost(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    try:
        drive_cluster(
            cluster,
            "drained",
            tmp_path,
            {"drain_node2": signal_node(cluster, "node2", signal.SIGTERM)},
        )
    finally:
        node2 = by_name(cluster, "node2")
        if node2.process.poll() is None:
            node2.process.wait(30)
        revive(cluster)


def test_a_single_node_shows_itself_draining_to_the_console_until_it_is_gone(
    tmp_path: Path,
) -> None:
    env = {**CONSOLE_ENV, "SWITCHBOARD_LIMITS": "off"}
    with running_server(env) as single:
        drive(
            single.url,
            single.secret,
            {"node1": single.url},
            "single_drain",
            tmp_path,
            {"drain_node1": lambda: single.process.send_signal(signal.SIGTERM)},
        )
        single.process.wait(30)
