"""Whether a socket may open: connect attempts per client address, and sockets per id.

Two checks around the app's own ``Socket.connect``: the connect rate per client address
comes first, before any credential is looked at; the per-id limit after, once ``connect``
has said who the client is. Each socket with an id is registered in the ``connections``
presence topic, which counts it on every node of the cluster.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from switchboard.actors.bridge import ask
from switchboard.actors.errors import ActorError
from switchboard.actors.limiter import Acquire
from switchboard.presence.tracker import CONNECTIONS_TOPIC
from switchboard.server.config import Settings
from switchboard.server.counters import Counters

if TYPE_CHECKING:
    from switchboard.presence.tracker import Presence
    from switchboard.server.supervision import ActorTree


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
        self.actors: ActorTree | None = None
        self.presence: Presence | None = None
        self._serials = itertools.count(1)

    async def admit_address(self, address: str) -> Admission:
        """Connect attempts per client address, before the credentials are looked at."""
        if not self.settings.limits or self.actors is None:
            return Admission()
        try:
            decision = await ask(
                self.actors.limiter,
                Acquire("connect", address),
                timeout=self.settings.actor_timeout,
            )
        except ActorError as exc:
            return Admission(status=503, reason=f"rate limiter unavailable: {exc}")
        if decision.allowed:
            return Admission()
        self.counters.count_rate_limited("connect", address)
        retry = str(max(1, round(decision.retry_after)))
        return Admission(
            status=429, reason="too many connection attempts", headers={"Retry-After": retry}
        )

    async def admit_socket(self, socket_id: str | None) -> Admission:
        """Register the socket in the ``connections`` topic, unless its id is at the per-id
        limit (counted over every node of the cluster). Anonymous sockets are not counted."""
        serial = next(self._serials)
        if socket_id is None or self.presence is None or not self.settings.presence:
            return Admission(serial)
        limit = self.settings.user_socket_limit if self.settings.limits else None
        meta = {"node": self.node, "connected_at": int(time.time())}
        try:
            tracked = await self.presence.track(
                connection_owner(serial), CONNECTIONS_TOPIC, socket_id, meta, limit
            )
        except ActorError as exc:
            return Admission(status=503, reason=f"presence unavailable: {exc}")
        if not tracked:
            return Admission(status=403, reason=f"{socket_id} already has {limit} sockets open")
        return Admission(serial)

    def release(self, serial: int) -> None:
        """An admitted socket never opened (or has closed): drop its connection entry."""
        if self.presence is not None and self.settings.presence:
            self.presence.forget(connection_owner(serial))
