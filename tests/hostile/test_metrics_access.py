"""Who may read /metrics: anyone (the default), holders of a bearer token, or whoever reaches
a listener of its own."""

from __future__ import annotations

import httpx

from tests.support.nodes import running_node

TOKEN = "metrics-token-" + "m" * 20
PROD = {
    "SWITCHBOARD_PROFILE": "prod",
    "SWITCHBOARD_SECRET": "s" * 40,
    "SWITCHBOARD_ALLOWED_ORIGINS": "https://app.example",
}


def test_with_a_metrics_token_metrics_answers_401_without_it_and_200_with_it() -> None:
    with running_node({"SWITCHBOARD_METRICS_TOKEN": TOKEN}) as server:
        url = f"{server.url}/metrics"
        refused = httpx.get(url, timeout=5)
        wrong = httpx.get(url, headers={"Authorization": "Bearer nope"}, timeout=5)
        allowed = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert "error" in refused.json()
    assert wrong.status_code == 401
    assert allowed.status_code == 200 and "switchboard_connections" in allowed.text


def test_with_a_metrics_address_metrics_is_served_there_and_404_on_the_main_port() -> None:
    with running_node({"SWITCHBOARD_METRICS_ADDRESS": "127.0.0.1:0"}) as server:
        line = server.wait_for_log(lambda e: e.get("event") == "metrics_listening")
        own = httpx.get(f"http://127.0.0.1:{line['port']}/metrics", timeout=5)
        main = httpx.get(f"{server.url}/metrics", timeout=5)
        health = httpx.get(f"{server.url}/health/live", timeout=5)
    assert own.status_code == 200 and "switchboard_connections" in own.text
    assert main.status_code == 404 and "error" in main.json()
    assert health.status_code == 200


def test_a_prod_node_with_metrics_open_to_anyone_says_so_at_start() -> None:
    with running_node(PROD) as server:
        server.wait_for_log(lambda e: "/metrics is open" in str(e.get("msg")))
    with running_node({**PROD, "SWITCHBOARD_METRICS_TOKEN": TOKEN}) as server:
        pass
    assert not [e for e in server.logs if "/metrics is open" in str(e.get("msg"))]
