"""Admission (server.admission): answered on the event loop at once, never behind an actor.

Unit tests with a presence that never answers, and a node whose presence and limiter actors
are stalled: connects are still admitted (or refused by the per-user limit) without delay.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack
from typing import Any

import httpx
import orjson
import pytest

from switchboard.client import Client
from switchboard.server.admission import AdmissionControl
from switchboard.server.codec import encode_broadcast, encode_push_json
from switchboard.server.config import Settings
from switchboard.server.counters import Counters
from tests.support.clients import open_client
from tests.support.nodes import running_node, unique_user

WAIT = 5.0


class SilentPresence:
    """A presence whose actor never answers: tracks hang, forgets are only noted."""

    def __init__(self) -> None:
        self.tracked: list[tuple[str, str, str]] = []
        self.forgotten: list[str] = []

    def track_later(self, owner: str, topic: str, key: str, meta: Any) -> asyncio.Future[Any]:
        self.tracked.append((owner, topic, key))
        return asyncio.get_running_loop().create_future()

    def forget(self, owner: str) -> None:
        self.forgotten.append(owner)


def admission(**settings: Any) -> tuple[AdmissionControl, SilentPresence]:
    control = AdmissionControl(
        Settings(profile="test", user_socket_limit=2, **settings).validated(), "me:1", Counters()
    )
    presence = SilentPresence()
    control.presence = presence  # type: ignore[assignment]
    return control, presence


def run(scenario: Any) -> None:
    async def main() -> None:
        await asyncio.wait_for(scenario(), 5)
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()

    asyncio.run(main())


def test_the_per_user_limit_is_decided_at_once_while_presence_never_answers() -> None:
    async def scenario() -> None:
        control, presence = admission()
        first, second = control.admit_socket("user:1"), control.admit_socket("user:1")
        assert first.admitted and second.admitted
        third = control.admit_socket("user:1")
        assert third.status == 403
        assert control.admit_socket("user:2").admitted
        control.release(first.serial)
        assert control.admit_socket("user:1").admitted
        assert [key for _, _, key in presence.tracked] == ["user:1", "user:1", "user:2", "user:1"]
        assert presence.forgotten == [f"socket:{first.serial}"]

    run(scenario)


def test_anonymous_sockets_are_not_counted() -> None:
    async def scenario() -> None:
        control, presence = admission()
        assert all(control.admit_socket(None).admitted for _ in range(5))
        assert presence.tracked == []

    run(scenario)


def diff(joins: dict[str, list[dict[str, Any]]], leaves: dict[str, list[dict[str, Any]]]) -> str:
    def shape(entries: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        return {key: {"metas": metas} for key, metas in entries.items()}

    payload = {"joins": shape(joins), "leaves": shape(leaves)}
    return encode_broadcast("connections", "presence_diff", payload)  # type: ignore[return-value]


def test_sockets_on_other_nodes_count_from_the_connections_diffs() -> None:
    async def scenario() -> None:
        control, _ = admission()
        elsewhere = {"node": "other:2", "phx_ref": "a"}
        here = {"node": "me:1", "phx_ref": "b"}  # ours: already counted exactly
        control.deliver("presence_diff", diff({"user:1": [elsewhere, here]}, {}))
        assert control.admit_socket("user:1").admitted
        assert control.admit_socket("user:1").status == 403, "one here, one on other:2"
        control.deliver("presence_diff", diff({}, {"user:1": [elsewhere]}))
        assert control.admit_socket("user:1").admitted
        control.deliver("presence_diff", diff({}, {"user:1": [elsewhere]}))  # said twice
        assert control.admit_socket("user:1").status == 403

    run(scenario)


def test_a_whole_presence_state_replaces_what_the_diffs_said() -> None:
    """Presence broadcasts a topic's whole state when it lost diffs (its actor crashed)."""

    async def scenario() -> None:
        control, _ = admission()
        control.deliver("presence_diff", diff({"user:1": [{"node": "x:2", "phx_ref": "a"}]}, {}))
        state = {
            "user:2": {"metas": [{"node": "x:2", "phx_ref": "b"}, {"node": "y:3", "phx_ref": "c"}]}
        }
        frame = encode_push_json(
            None, "connections", "presence_state", orjson.dumps(state).decode()
        )
        control.deliver("presence_state", frame)
        assert control.admit_socket("user:1").admitted
        assert control.admit_socket("user:1").admitted, "user:1's entry on x:2 is gone"
        assert control.admit_socket("user:2").status == 403, "two on other nodes"

    run(scenario)


def test_the_connect_rate_is_decided_at_once() -> None:
    async def scenario() -> None:
        control, _ = admission(connect_rate=("2", "0.5"))
        assert control.admit_address("10.0.0.1").admitted
        assert control.admit_address("10.0.0.1").admitted
        refused = control.admit_address("10.0.0.1")
        assert refused.status == 429 and refused.headers == {"Retry-After": "2"}
        assert control.admit_address("10.0.0.2").admitted

    run(scenario)


def test_with_limits_off_nothing_is_refused() -> None:
    async def scenario() -> None:
        control, _ = admission(limits=False)
        assert all(control.admit_address("10.0.0.1").admitted for _ in range(50))
        assert all(control.admit_socket("user:1").admitted for _ in range(5))

    run(scenario)


@pytest.mark.parametrize("actor", ["presence", "limiter"])
def test_connects_are_admitted_at_once_while_an_actor_is_stalled(actor: str) -> None:
    env = {"SWITCHBOARD_CONNECT_RATE": "1000,1000", "SWITCHBOARD_USER_SOCKET_LIMIT": "2"}
    with running_node(env) as node, ExitStack() as stack:
        stalled = httpx.post(
            f"{node.url}/test/actors/{actor}/stall", params={"seconds": 4}, timeout=WAIT
        )
        assert stalled.json() == {"sent": True}
        started = time.monotonic()
        for n in range(10):
            open_client(stack, node, unique_user(f"storm{n}")).heartbeat()
        user = unique_user("twice")
        open_client(stack, node, user)
        open_client(stack, node, user)
        assert Client.refusal(node.socket_url(user)).status == 403
        elapsed = time.monotonic() - started
        assert elapsed < 1.5, f"13 connects took {elapsed:.1f} s behind a stalled {actor}"
