"""``Presence.track_later``: an entry nobody waits on (a socket in ``connections``) costs no
hand-off to the actor of its own. It rides with the next change that is waited on, in
order, or goes alone one window later.

In-process, the real actor; each test records the batches the tracker hands the actor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from switchboard.presence import actor as msg
from switchboard.presence.tracker import Presence
from tests.presence.inprocess import InProcessNode, in_process_node

WINDOW = 0.3
TURNS = 20  # turns of the loop a change that is waited on would not have waited


@pytest.fixture
def node() -> Iterator[InProcessNode]:
    with in_process_node(presence_window=WINDOW) as running:
        yield running


def _recording_batches(presence: Presence) -> list[list[tuple[str, str]]]:
    """(change, key) of each batch the tracker hands the actor, in order."""
    batches: list[list[tuple[str, str]]] = []
    ask = presence._ask

    async def recording(message: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(message, msg.Batch):
            batches.append(
                [(type(c).__name__, getattr(c, "key", c.owner)) for c in message.changes]
            )
        return await ask(message, *args, **kwargs)

    presence._ask = recording  # type: ignore[method-assign]
    return batches


async def _turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def test_a_later_track_goes_with_the_next_change_that_is_waited_on(node: InProcessNode) -> None:
    async def scenario() -> None:
        presence = node.node.presence
        assert presence is not None
        batches = _recording_batches(presence)
        later = presence.track_later("socket:1", "connections", "ann", {"node": "here"})
        await _turns(TURNS)
        assert batches == [], "handed to the actor on its own"
        assert await presence.track("channel:1", "room:later", "ann", {})
        assert batches == [[("Track", "ann"), ("Track", "ann")]]
        assert later.done() and later.result() is not None
        assert list(await presence.list("connections")) == ["ann"]

    node.run(scenario())


def test_a_later_track_alone_goes_one_window_later(node: InProcessNode) -> None:
    async def scenario() -> None:
        presence = node.node.presence
        assert presence is not None
        batches = _recording_batches(presence)
        queued_at = node.loop.time()
        later = presence.track_later("socket:1", "connections", "ben", {})
        # Not much later either: other asks (the stats tick's, every second) would take it.
        await node.until("the later track acknowledged", later.done, timeout=WINDOW + 0.4)
        assert node.loop.time() - queued_at >= WINDOW * 0.9, "it did not wait for a change"
        assert batches == [[("Track", "ben")]]
        assert list(await presence.list("connections")) == ["ben"]

    node.run(scenario())


def test_forgetting_the_owner_before_its_later_track_went_leaves_nothing_behind(
    node: InProcessNode,
) -> None:
    async def scenario() -> None:
        presence = node.node.presence
        assert presence is not None
        batches = _recording_batches(presence)
        later = presence.track_later("socket:1", "connections", "cleo", {})
        presence.forget("socket:1")
        await node.until("both acknowledged", lambda: later.done() and batches != [])
        assert batches[0] == [("Track", "cleo"), ("UntrackOwner", "socket:1")], "out of order"
        await node.until("every untrack acknowledged", lambda: not presence._background)
        assert await presence.list("connections") == {}

    node.run(scenario())
