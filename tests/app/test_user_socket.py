"""An app's own ``Socket``: what ``connect`` is given, what refuses a client, and which of
the node's rules apply to every socket class."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from switchboard.client import Client, bearer_subprotocol
from tests.support.processes import ServerProcess, running_server

PROBE = textwrap.dedent(
    """
    from switchboard import Channel, Socket, ok

    class EchoChannel(Channel):
        def join(self, payload):
            return ok({"id": self.socket.id, "assigns": self.socket.assigns})

        def handle_in(self, event, payload):
            self.socket.assigns[event] = payload["value"]
            return ok()

    class ProbeSocket(Socket):
        channels = {"echo:*": EchoChannel}

        async def connect(self, params, info):
            mode = params.get("mode")
            if mode == "crash":
                raise RuntimeError("connect blew up on purpose")
            if mode == "not_bool":
                return "yes"
            self.assigns.update(
                params=dict(params),
                address=info.address,
                origin=info.origin,
                auth_token=info.auth_token,
                custom_header=info.headers.get("x-custom"),
            )
            return params.get("let_in") == "yes"

        def id(self):
            if self.assigns["params"].get("mode") == "bad_id":
                raise KeyError("no id today")
            return self.assigns["params"].get("user")
    """
)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("probe-app")
    (folder / "probe.py").write_text(PROBE)
    env = {
        "SWITCHBOARD_TRUSTED_PROXIES": "127.0.0.1",
        "SWITCHBOARD_ALLOWED_ORIGINS": "http://good.example",
        "SWITCHBOARD_USER_SOCKET_LIMIT": "2",
        "SWITCHBOARD_CONNECT_RATE": "1000,1000",
    }
    with running_server(env, args=("probe:ProbeSocket",), cwd=folder) as server:
        yield server


def _url(server: ServerProcess, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"vsn": "2.0.0", **params}.items())
    return f"{server.ws_url}?{query}"


def _open(stack: ExitStack, url: str, **options: Any) -> Client:
    return stack.enter_context(Client.connect(url, **options))


def _status(url: str, **options: Any) -> int:
    return Client.refusal(url, **options).status


def test_connect_gets_the_params_the_address_behind_a_trusted_proxy_headers_origin_and_token(
    probe: ServerProcess,
) -> None:
    token = "opaque-token.from/the_client"
    subprotocol = bearer_subprotocol(token)
    with ExitStack() as stack:
        wire = _open(
            stack,
            _url(probe, let_in="yes", user="ann", color="green"),
            origin="http://good.example",
            subprotocols=["phoenix", subprotocol],
            headers={"X-Forwarded-For": "198.51.100.7", "X-Custom": "hello"},
        )
        reply = wire.call("echo:a", "phx_join")[4]["response"]
    assert reply["id"] == "ann"
    assert reply["assigns"] == {
        "params": {"vsn": "2.0.0", "let_in": "yes", "user": "ann", "color": "green"},
        "address": "198.51.100.7",
        "origin": "http://good.example",
        "auth_token": token,
        "custom_header": "hello",
    }


def test_assigns_are_one_dict_shared_by_every_channel_of_the_socket(probe: ServerProcess) -> None:
    with ExitStack() as stack:
        wire = _open(stack, _url(probe, let_in="yes"))
        wire.joined("echo:first")
        assert wire.reply(wire.push("echo:first", "mood", {"value": "sunny"}))[4]["status"] == "ok"
        second = wire.call("echo:second", "phx_join")[4]["response"]
    assert second["assigns"]["mood"] == "sunny"
    assert second["id"] is None  # no user param: an anonymous socket


def test_connect_returning_false_is_a_403(probe: ServerProcess) -> None:
    assert _status(_url(probe, let_in="no")) == 403


def test_an_exception_in_connect_refuses_with_403_logs_it_and_the_node_serves_on(
    probe: ServerProcess,
) -> None:
    assert _status(_url(probe, mode="crash")) == 403
    logged = probe.wait_for_log(lambda e: "ProbeSocket.connect raised" in str(e.get("msg")))
    assert logged["level"] == "error" and "connect blew up on purpose" in str(logged)
    with ExitStack() as stack:
        assert _open(stack, _url(probe, let_in="yes")).joined("echo:after-crash")


def test_connect_returning_something_else_than_a_bool_refuses_and_says_so(
    probe: ServerProcess,
) -> None:
    assert _status(_url(probe, mode="not_bool")) == 403
    probe.wait_for_log(lambda e: "expected True or False" in str(e.get("msg")))


def test_an_exception_in_id_refuses_with_403_and_is_logged(probe: ServerProcess) -> None:
    assert _status(_url(probe, let_in="yes", mode="bad_id")) == 403
    probe.wait_for_log(lambda e: "ProbeSocket.id raised" in str(e.get("msg")))


def test_the_per_id_socket_limit_counts_sockets_of_the_same_id(probe: ServerProcess) -> None:
    with ExitStack() as stack:
        for _ in range(2):
            _open(stack, _url(probe, let_in="yes", user="bea"))
        assert _status(_url(probe, let_in="yes", user="bea")) == 403
        _open(stack, _url(probe, let_in="yes", user="cid"))  # another id is not affected
        _open(stack, _url(probe, let_in="yes"))  # nor are anonymous sockets
        _open(stack, _url(probe, let_in="yes"))
        _open(stack, _url(probe, let_in="yes"))


def test_the_origin_allow_list_applies_before_connect(probe: ServerProcess) -> None:
    assert _status(_url(probe, let_in="yes"), origin="http://evil.example") == 403
