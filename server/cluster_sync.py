"""Keeps what each node holds in step with the others: cache invalidations and presence.

Cache deletes and prefix invalidations made on one node reach every other node's cache
(without coming back). After a pub/sub outage, broadcasts sent meanwhile are lost: the
cache is cleared (another node may have invalidated an entry) and presence asks every node
for its entries again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from switchboard.actors.bridge import tell
from switchboard.actors.cache import CacheDelete, CacheInvalidatePrefix
from switchboard.server.codec import Frame
from switchboard.server.pubsub import PubSub

if TYPE_CHECKING:
    from switchboard.presence.tracker import Presence
    from switchboard.server.supervision import ActorTree

logger = logging.getLogger("switchboard.cluster")

CACHE_TOPIC = "switchboard:cache"


class ClusterSync:
    def __init__(self, pubsub: PubSub, actors: ActorTree) -> None:
        self.pubsub = pubsub
        self.actors = actors
        self.presence: Presence | None = None

    def start(self) -> None:
        self.pubsub.subscribe(CACHE_TOPIC, self)
        self.actors.on_cache_invalidate = self.publish_invalidation
        self.pubsub.on_reconnect(self.reconnected)

    def stop(self) -> None:
        self.pubsub.unsubscribe(CACHE_TOPIC, self)

    def publish_invalidation(self, kind: str, key_or_prefix: str) -> None:
        """A local invalidation (``delete`` or ``prefix``): tell the other nodes."""
        self.pubsub.broadcast_remote(CACHE_TOPIC, kind, key_or_prefix)

    def deliver(self, event: str, frame: Frame) -> None:
        """Another node's invalidation: apply it here, without sending it back."""
        if not isinstance(frame, str):
            return
        if event == "delete":
            tell(self.actors.cache, CacheDelete(frame, propagate=False))
        elif event == "prefix":
            tell(self.actors.cache, CacheInvalidatePrefix(frame, propagate=False))

    def reconnected(self) -> None:
        logger.info("pub/sub back: clearing the cache and resyncing presence")
        tell(self.actors.cache, CacheInvalidatePrefix("", propagate=False))
        if self.presence is not None:
            self.presence.resync()
