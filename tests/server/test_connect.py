"""Connecting over a real socket: tokens, the authToken subprotocol, vsn and origins."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.client import AsyncClient, bearer_subprotocol
from switchboard.server.auth import issue_token, token_from_subprotocols, verify_token
from tests.server.nodes import node
from tests.support.clients import run
from tests.support.processes import ServerProcess

GOOD_ORIGIN = "http://good.example"


@pytest.fixture(scope="module")
def guarded() -> Iterator[ServerProcess]:
    """A node that only lets pages from GOOD_ORIGIN open sockets."""
    with node({"SWITCHBOARD_ALLOWED_ORIGINS": GOOD_ORIGIN}) as running:
        yield running


def refused(url: str, **options: object) -> None:
    refusal = run(AsyncClient.refusal(url, **options))
    assert (refusal.status, refusal.body) == (403, b"")


def accepted(url: str, **options: object) -> str | None:
    """Connect, answer a heartbeat, return the subprotocol the server chose."""

    async def scenario() -> str | None:
        peer = await AsyncClient.connect(url, **options)
        reply = await peer.reply(await peer.heartbeat())
        assert reply[4] == {"status": "ok", "response": {}}
        await peer.close()
        return peer.subprotocol

    return run(scenario())


def test_a_valid_token_in_the_query_string_is_accepted(server: ServerProcess) -> None:
    assert accepted(server.socket_url("alice")) is None


def test_a_missing_token_is_refused_with_403_before_the_upgrade(server: ServerProcess) -> None:
    refused(f"{server.ws_url}?vsn=2.0.0")


def test_a_forged_token_is_refused_with_403_before_the_upgrade(server: ServerProcess) -> None:
    forged = issue_token("some-other-secret", "alice")
    refused(f"{server.ws_url}?token={forged}&vsn=2.0.0")


def test_a_token_with_a_tampered_payload_is_refused(server: ServerProcess) -> None:
    payload, _, signature = server.token("alice").partition(".")
    other_payload, _, _ = server.token("mallory").partition(".")
    refused(f"{server.ws_url}?token={other_payload}.{signature}&vsn=2.0.0")
    assert payload != other_payload


def test_an_expired_token_is_refused_with_403(server: ServerProcess) -> None:
    refused(f"{server.ws_url}?token={server.token('alice', ttl=-60)}&vsn=2.0.0")


def test_a_token_in_the_auth_token_subprotocol_is_accepted_and_phoenix_is_answered(
    server: ServerProcess,
) -> None:
    protocols = ["phoenix", bearer_subprotocol(server.token("alice"))]
    assert accepted(f"{server.ws_url}?vsn=2.0.0", subprotocols=protocols) == "phoenix"


def test_the_auth_token_subprotocol_may_use_the_url_safe_alphabet(server: ServerProcess) -> None:
    token = server.token("bob")
    encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    protocols = ["phoenix", "base64url.bearer.phx." + encoded]
    assert accepted(f"{server.ws_url}?vsn=2.0.0", subprotocols=protocols) == "phoenix"


def test_a_forged_token_in_the_subprotocol_is_refused(server: ServerProcess) -> None:
    protocols = ["phoenix", bearer_subprotocol(issue_token("wrong-secret", "alice"))]
    refused(f"{server.ws_url}?vsn=2.0.0", subprotocols=protocols)


def test_a_subprotocol_token_that_is_not_base64_is_refused(server: ServerProcess) -> None:
    refused(f"{server.ws_url}?vsn=2.0.0", subprotocols=["phoenix", "base64url.bearer.phx.%%%"])


def test_a_missing_vsn_means_1_0_0_and_is_refused(server: ServerProcess) -> None:
    refused(f"{server.ws_url}?token={server.token('alice')}")


@pytest.mark.parametrize("vsn", ["1.0.0", "3.0.0"])
def test_a_vsn_other_than_2_is_refused(server: ServerProcess, vsn: str) -> None:
    refused(server.socket_url("alice", vsn=vsn))


def test_vsn_2_1_is_accepted(server: ServerProcess) -> None:
    assert accepted(server.socket_url("alice", vsn="2.1")) is None


def test_an_origin_not_in_the_allow_list_is_refused_with_403(guarded: ServerProcess) -> None:
    refused(guarded.socket_url("alice"), origin="http://evil.example")


def test_an_origin_in_the_allow_list_is_accepted(guarded: ServerProcess) -> None:
    accepted(guarded.socket_url("alice"), origin=GOOD_ORIGIN)


def test_a_client_that_sends_no_origin_is_accepted(guarded: ServerProcess) -> None:
    accepted(guarded.socket_url("alice"))


def test_any_origin_is_accepted_without_an_allow_list(server: ServerProcess) -> None:
    accepted(server.socket_url("alice"), origin="http://anywhere.example")


def test_refusals_leave_the_node_healthy(server: ServerProcess) -> None:
    refused(f"{server.ws_url}?vsn=2.0.0")
    response = httpx.get(f"{server.url}/health/live", timeout=5)
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.text(min_size=1, max_size=40))
def test_tokens_survive_the_auth_token_subprotocol_and_never_contain_a_slash(user: str) -> None:
    """PROTOCOL §1: base64 of the token must avoid "/" or Node's ws client rejects it."""
    token = issue_token("secret", user)
    standard = base64.b64encode(token.encode()).decode()
    assert "/" not in standard and "+" not in standard
    recovered = token_from_subprotocols(["phoenix", bearer_subprotocol(token)])
    assert recovered == token
    assert verify_token("secret", recovered).user_id == user
