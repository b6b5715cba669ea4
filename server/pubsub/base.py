"""The interface a pub/sub backend implements to carry broadcasts between nodes.

The core (:class:`~switchboard.server.pubsub.core.PubSub`) always does local fan-out itself; a
backend only moves already-encoded broadcasts to the other nodes and hands theirs to the core. The
core subscribes the backend to a topic on its first local subscriber and unsubscribes on
its last. ``publish``/``subscribe`` never block and never raise on an outage: a backend
that cannot reach its engine reports it through :attr:`status` and catches up once back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from switchboard.server.codec import Frame

#: Called by a backend for a broadcast from another node: (topic, event, frame).
Deliver = Callable[[str, str, Frame], None]


@dataclass(frozen=True, slots=True)
class BackendStatus:
    connected: bool
    reason: str = ""


class Backend(ABC):
    """Carries broadcasts between nodes. One instance per node."""

    #: Short name for logs and metrics ("memory", "redis").
    name: str = "backend"

    @abstractmethod
    async def start(self, node: str, deliver: Deliver) -> None:
        """Connect; from now on call ``deliver`` for other nodes' broadcasts."""

    @abstractmethod
    async def stop(self) -> None:
        """Disconnect and cancel every task the backend started."""

    @abstractmethod
    def subscribe(self, topic: str) -> None:
        """Start receiving other nodes' broadcasts on ``topic``."""

    @abstractmethod
    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``."""

    @abstractmethod
    def publish(self, topic: str, event: str, frame: Frame) -> None:
        """Send a broadcast to the other nodes (not back to this one)."""

    @property
    @abstractmethod
    def status(self) -> BackendStatus:
        """Whether the backend reaches its engine now, and if not, why."""

    async def settled(self) -> None:
        """Return once every subscribe/unsubscribe made so far is in effect on the engine."""
        return None

    def add_reconnect_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (on the loop) after the backend reconnected and resubscribed;
        broadcasts sent meanwhile are lost, so this is when to resync state."""
        return None
