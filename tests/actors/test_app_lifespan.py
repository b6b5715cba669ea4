"""The supervision tree lives exactly as long as the app's lifespan."""

from __future__ import annotations

import asyncio
import threading

import pykka

from switchboard.server.app import create_app
from switchboard.server.config import Settings


def _actor_threads() -> set[threading.Thread]:
    return {
        t for t in threading.enumerate() if "Actor" in t.name or t.name.startswith("switchboard-")
    }


def test_the_actor_tree_starts_with_the_app_and_leaves_no_thread_after_shutdown() -> None:
    before = _actor_threads()
    app = create_app(Settings.from_env({}, profile="test", port=0))
    node = app.state.node
    running: set[threading.Thread] = set()

    async def lifespan() -> None:
        async with app.router.lifespan_context(app):
            assert node.healthy and node.pubsub.status.connected
            names = {ref.actor_class.__name__ for ref in pykka.ActorRegistry.get_all()}
            assert {"CacheActor", "LimiterActor", "PresenceActor"} <= names
            running.update(_actor_threads() - before)

    asyncio.run(lifespan())
    assert running, "the actors should run on their own threads"
    for thread in running:
        thread.join(5)
    assert not [t for t in running if t.is_alive()], "actor threads outlived the app"
    assert not pykka.ActorRegistry.get_all()
    assert not node.healthy
