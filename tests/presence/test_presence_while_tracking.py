"""The presence_diffs flushed while a joiner's own track waits are not sent to it twice.

Phoenix's after-join tracks, then pushes the state; diffs flushed while the track waits for
the presence actor are in that state too. They are held meanwhile: dropped once a state push
starts, delivered in order if the channel goes idle without one. A node runs in this
process; one user's track is held back by the test, so the overlap is certain.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from switchboard.channels.channel import Channel
from switchboard.channels.router import Router
from switchboard.server.demo import DemoSocket
from switchboard.server.socket_server import SocketServer
from tests.presence.inprocess import InProcessNode, Recorder, in_process_node, send

_serials = itertools.count(1_000)


class TrackOnlyChannel(Channel):
    """Tracks its user after joining and never pushes a presence_state."""

    def join(self, payload: Any) -> Any:
        self.send_info("track")
        return super().join(payload)

    async def handle_info(self, message: Any) -> Any:
        await self.track(self.socket.assigns["user_id"], {})


class BackgroundTrackChannel(Channel):
    """Tracks its user from a task of its own, outside any handler."""

    def join(self, payload: Any) -> Any:
        user = self.socket.assigns["user_id"]
        _background.add(asyncio.get_running_loop().create_task(self.track(user, {})))
        return super().join(payload)


_background: set[asyncio.Task[None]] = set()


def _socket(node: InProcessNode, user: str) -> tuple[SocketServer, Recorder]:
    """A connected socket of ``user`` whose topics also include ``plain:*``."""
    handler = DemoSocket()
    handler.assigns["user_id"] = user
    recorder = Recorder()
    channels = {"plain:*": TrackOnlyChannel, "background:*": BackgroundTrackChannel}
    router = Router.of({**DemoSocket.channels, **channels})
    serial = next(_serials)
    socket = SocketServer(node.node, router, serial, handler, f"users_socket:{user}", recorder)
    return socket, recorder


def _hold_tracks_of(node: InProcessNode, user: str) -> asyncio.Event:
    """Make ``user``'s tracks wait until the returned event is set."""
    presence = node.node.presence
    assert presence is not None
    release = asyncio.Event()
    original = presence.track

    async def track(owner: str, topic: str, key: str, meta: Any, limit: Any = None) -> bool:
        if key == user:
            await release.wait()
        return await original(owner, topic, key, meta, limit)

    presence.track = track  # type: ignore[method-assign]
    return release


async def _join(node: InProcessNode, user: str, topic: str) -> Recorder:
    """``user`` joins ``topic`` on a socket of its own; returns once the join is answered."""
    socket, frames = _socket(node, user)
    send(socket, "1", "1", topic, "phx_join", {})
    await node.until(f"{user} joined", lambda: any(f[3] == "phx_reply" for f in frames.frames))
    return frames


def _keys(frame: list[Any]) -> set[str]:
    payload = frame[4]
    return set(payload) if frame[3] == "presence_state" else set(payload["joins"])


def _joined(recorder: Recorder, topic: str, user: str) -> bool:
    return any(user in _keys(frame) for frame in recorder.presence(topic))


def test_a_joiner_gets_the_diffs_of_its_tracks_wait_in_its_state_only() -> None:
    with in_process_node() as node:

        async def scenario() -> None:
            topic = "room:held"
            first_frames = await _join(node, "first", topic)
            await node.until("first sees itself", lambda: _joined(first_frames, topic, "first"))
            release = _hold_tracks_of(node, "slow")
            slow_frames = await _join(node, "slow", topic)
            await _join(node, "other", topic)
            # other's join is flushed while slow's track still waits: a diff slow is subscribed to
            await node.until("the diff of other", lambda: _joined(first_frames, topic, "other"))
            release.set()
            await node.until("slow sees itself", lambda: _joined(slow_frames, topic, "slow"))

            frames = slow_frames.presence(topic)
            assert frames[0][3] == "presence_state", f"a diff came before the state: {frames}"
            assert {"first", "other"} <= _keys(frames[0])
            seen = [key for frame in frames for key in _keys(frame)]
            assert len(seen) == len(set(seen)), f"a presence was sent twice: {frames}"

        node.run(scenario())


@pytest.mark.parametrize("topic", ["plain:held", "background:held"])
def test_a_channel_that_tracks_without_pushing_a_state_still_gets_every_diff(topic: str) -> None:
    with in_process_node() as node:

        async def scenario() -> None:
            release = _hold_tracks_of(node, "slow")
            slow_frames = await _join(node, "slow", topic)
            other_frames = await _join(node, "other", topic)
            await node.until("the diff of other", lambda: _joined(other_frames, topic, "other"))
            assert not _joined(slow_frames, topic, "other"), "held while slow's track waits"
            release.set()
            await node.until("slow sees itself", lambda: _joined(slow_frames, topic, "slow"))

            diffs = slow_frames.presence(topic)
            assert [f[3] for f in diffs] == ["presence_diff"] * len(diffs)
            assert [key for frame in diffs for key in _keys(frame)] == ["other", "slow"]

        node.run(scenario())
