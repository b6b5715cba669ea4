"""Sockets that send what cannot be answered as asked: oversize frames, payloads too deep to
echo, connects over the rate. Each costs only its own request or connection, and no error
in the log."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from switchboard.client import Client
from tests.hostile.bystander import bystander
from tests.support.nodes import running_node, unique_user
from tests.support.processes import ServerProcess

MAX_FRAME = 4096
WAIT = 5.0


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    env = {"SWITCHBOARD_MAX_FRAME_SIZE": str(MAX_FRAME), "SWITCHBOARD_CONNECT_RATE": "1000,1000"}
    with running_node(env) as node:
        yield node


def test_a_frame_over_the_size_limit_gets_close_1009_not_a_reset(server: ServerProcess) -> None:
    with bystander(server, "8 MB frames against a 4 KiB limit"):
        for _ in range(2):
            with connect(server.socket_url(unique_user("big")), open_timeout=WAIT) as ws:
                try:
                    ws.send("x" * 8_000_000)
                except ConnectionClosed:
                    pass  # the close frame came while sending: read below what it said
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=WAIT)
            assert closed.value.rcvd is not None, "no close frame: the connection was reset"
            assert closed.value.rcvd.code == 1009


def test_a_reply_too_deep_to_encode_is_an_error_reply_and_the_channel_stays_joined(
    server: ServerProcess,
) -> None:
    deep = json.loads("[" * 300 + "]" * 300)  # decodes (orjson: 1024 levels), won't encode
    logged_before = len(server.logs)
    with Client.connect(server.socket_url(unique_user("deep"))) as client:
        client.joined("test:deep")
        ref = client.next_ref()  # orjson, the client's encoder, cannot encode it either
        join_ref = client.join_refs["test:deep"]
        client.send_raw(json.dumps([join_ref, ref, "test:deep", "ping", {"deep": deep}]))
        reply = client.reply(ref)
        assert reply[3:] == [
            "phx_reply",
            {"status": "error", "response": {"reason": "unencodable_reply"}},
        ]
        reply = client.call("test:deep", "ping", {"fine": True})
        assert reply[4] == {"status": "ok", "response": {"fine": True}}
    server.wait_for_log(lambda e: "cannot be encoded" in str(e.get("msg")))
    errors = [e for e in server.logs[logged_before:] if e.get("level") == "error"]
    assert len(errors) == 1 and "cannot be encoded" in str(errors[0]["msg"]), errors


def test_a_connect_refused_by_the_rate_limit_is_429_and_logs_no_error() -> None:
    with running_node({"SWITCHBOARD_CONNECT_RATE": "1,0.01"}) as server:
        with Client.connect(server.socket_url(unique_user("first"))):
            pass
        for _ in range(3):
            assert Client.refusal(server.socket_url(unique_user("again"))).status == 429
        server.wait_for_log(lambda e: "refused socket" in str(e.get("msg")))
    errors = [e for e in server.logs if e.get("level") in ("error", "critical")]
    assert not errors, errors
