"""Whether a socket may open: connect attempts per client address, and sockets per id.

Two checks around the app's own ``Socket.connect``: the connect rate per client address
comes first, before any credential is looked at; the per-id limit after, once ``connect``
has said who the client is. Both are answered here, on the event loop, at once: in a storm
of reconnects an admission never waits behind presence work or an actor's mailbox.

The per-id limit counts this node's sockets exactly and other nodes' from the
``connections`` presence topic, whose diffs every node receives; each socket with an id is
tracked there without waiting (with the next presence change, or one window later), which
also lists every node's sockets by id at ``/api/presence/connections``. Two sockets of one
id opening on two nodes within a replication delay may both be admitted.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from switchboard.actors.token_bucket import TokenBuckets
from switchboard.presence.tracker import CONNECTIONS_TOPIC
from switchboard.server.codec import Frame
from switchboard.server.config import Settings
from switchboard.server.counters import Counters

if TYPE_CHECKING:
    from switchboard.presence.tracker import Presence
    from switchboard.server.pubsub import PubSub

logger = logging.getLogger("switchboard.admission")


def _report_untracked(socket_id: str, tracked: asyncio.Future[Any]) -> None:
    failure = None if tracked.cancelled() else tracked.exception()
    if failure is not None:
        logger.warning("connection of %s not in presence yet: %s", socket_id, failure)


def connection_owner(serial: int) -> str:
    """The presence owner of a socket's entry in the ``connections`` topic."""
    return f"socket:{serial}"


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a socket may open; if not, the HTTP status (and headers) refusing it."""

    serial: int = 0
    status: int = 0
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def admitted(self) -> bool:
        return self.status == 0


class AdmissionControl:
    def __init__(self, settings: Settings, node: str, counters: Counters) -> None:
        self.settings = settings
        self.node = node
        self.counters = counters
        self.presence: Presence | None = None
        self._serials = itertools.count(1)
        self._connects: TokenBuckets | None = None
        if settings.limits:
            self._connects = TokenBuckets(time.monotonic())
            self._connect_rate = settings.rate("connect_rate")
        self._local: dict[str, int] = {}  # socket id -> sockets open here
        self._ids: dict[int, str] = {}  # serial -> socket id, for sockets with an id
        self._remote: dict[str, set[str]] = {}  # socket id -> phx_refs of other nodes

    @property
    def _counts_other_nodes(self) -> bool:
        """The per-id limit is on, and other nodes' sockets can be heard of."""
        return self.settings.limits and self.settings.presence

    def start(self, pubsub: PubSub) -> None:
        """Follow the ``connections`` topic, to count other nodes' sockets."""
        if self._counts_other_nodes:
            pubsub.subscribe(CONNECTIONS_TOPIC, self)

    def stop(self, pubsub: PubSub) -> None:
        if self._counts_other_nodes:
            pubsub.unsubscribe(CONNECTIONS_TOPIC, self)

    def admit_address(self, address: str) -> Admission:
        """Connect attempts per client address, before the credentials are looked at."""
        if self._connects is None:
            return Admission()
        retry_after = self._connects.take(address, *self._connect_rate, time.monotonic())
        if retry_after == 0.0:
            return Admission()
        self.counters.count_rate_limited("connect", address)
        retry = str(max(1, round(retry_after)))
        return Admission(
            status=429, reason="too many connection attempts", headers={"Retry-After": retry}
        )

    def admit_socket(self, socket_id: str | None) -> Admission:
        """Admit a socket unless its id is at the per-id limit, counted over every node of
        the cluster. Anonymous sockets are not counted."""
        serial = next(self._serials)
        if socket_id is None:
            return Admission(serial)
        here = self._local.get(socket_id, 0)
        if self.settings.limits:
            limit = self.settings.user_socket_limit
            if here + len(self._remote.get(socket_id, ())) >= limit:
                return Admission(status=403, reason=f"{socket_id} already has {limit} sockets open")
        self._local[socket_id] = here + 1
        self._ids[serial] = socket_id
        if self.presence is not None and self.settings.presence:
            meta = {"node": self.node, "connected_at": int(time.time())}
            owner = connection_owner(serial)
            tracked = self.presence.track_later(owner, CONNECTIONS_TOPIC, socket_id, meta)
            tracked.add_done_callback(functools.partial(_report_untracked, socket_id))
        return Admission(serial)

    def release(self, serial: int) -> None:
        """An admitted socket never opened (or has closed): it counts no more."""
        socket_id = self._ids.pop(serial, None)
        if socket_id is None:
            return
        left = self._local[socket_id] - 1
        if left:
            self._local[socket_id] = left
        else:
            del self._local[socket_id]
        if self.presence is not None and self.settings.presence:
            self.presence.forget(connection_owner(serial))

    def deliver(self, event: str, frame: Frame) -> None:
        """The ``connections`` topic's ``presence_diff`` (other nodes' sockets come and go) or,
        after presence lost some diffs, its whole ``presence_state``."""
        if event == "presence_diff":
            diff = orjson.loads(frame)[4]
            for key, presence in diff.get("joins", {}).items():
                refs = self._others(presence["metas"])
                if refs:
                    self._remote.setdefault(key, set()).update(refs)
            for key, presence in diff.get("leaves", {}).items():
                known = self._remote.get(key)
                if known is not None:
                    known.difference_update(m["phx_ref"] for m in presence["metas"])
                    if not known:
                        del self._remote[key]
        elif event == "presence_state":
            state = orjson.loads(frame)[4]
            remote = ((key, self._others(p["metas"])) for key, p in state.items())
            self._remote = {key: refs for key, refs in remote if refs}

    def _others(self, metas: list[dict[str, Any]]) -> set[str]:
        return {m["phx_ref"] for m in metas if m.get("node") != self.node}
