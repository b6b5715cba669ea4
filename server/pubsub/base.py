"""The interface a pub/sub backend implements to carry broadcasts between nodes.

The core (:class:`~switchboard.server.pubsub.core.PubSub`) always does local fan-out itself; a
backend only moves already-encoded broadcasts to the other nodes and hands theirs to the core. The
core subscribes the backend to a topic on its first local subscriber and unsubscribes on
its last. ``publish``/``subscribe`` never block and never raise on an outage: a backend
that cannot reach its engine reports it through :attr:`status` and catches up once back.

History topics take a second path. ``publish_history`` hands a broadcast to the backend,
which keeps it in the topic's history, gives it a
:class:`~switchboard.server.pubsub.history.Position` (the same on every node) and delivers
it, positioned, to every subscribed node *including this one*, in position order: the core
fans it out when it comes back, so every node sees a topic's broadcasts in one order.
``history`` reads what a topic keeps. Errors::

    Exception
     └── Unavailable      the engine cannot be reached: a history read failed, or a
                          broadcast on a history topic could not even be buffered
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from switchboard.server.codec import Frame
from switchboard.server.pubsub.history import HistoryRead, Position

#: Called by a backend for a broadcast from another node: (topic, event, frame).
Deliver = Callable[[str, str, Frame], None]
#: Called by a backend for a broadcast on a history topic, from any node:
#: (topic, event, frame, position, tag). ``tag`` is the one given to ``publish_history``
#: when this node published it, else 0. The frame is as published (without the position).
DeliverHistory = Callable[[str, str, str, Position, int], None]


class Unavailable(Exception):
    """The pub/sub engine cannot be reached now; try again later."""


@dataclass(frozen=True, slots=True)
class BackendStatus:
    connected: bool
    reason: str = ""


def _ignore_history(topic: str, event: str, frame: str, position: Position, tag: int) -> None:
    return None


class Backend(ABC):
    """Carries broadcasts between nodes. One instance per node."""

    #: Short name for logs and metrics ("memory", "redis").
    name: str = "backend"

    @abstractmethod
    async def start(
        self, node: str, deliver: Deliver, deliver_history: DeliverHistory = _ignore_history
    ) -> None:
        """Connect; from now on call ``deliver`` for other nodes' broadcasts and
        ``deliver_history`` for every positioned one."""

    @abstractmethod
    async def stop(self) -> None:
        """Disconnect and cancel every task the backend started."""

    @abstractmethod
    def subscribe(self, topic: str) -> asyncio.Future[None] | None:
        """Start receiving ``topic``. Returns None if that is in effect at once, else a
        future done once the engine confirmed it (only a broadcast published after that is
        sure to arrive)."""

    @abstractmethod
    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``."""

    @abstractmethod
    def publish(self, topic: str, event: str, frame: Frame) -> None:
        """Send a broadcast to the other nodes (not back to this one)."""

    @abstractmethod
    def publish_history(self, topic: str, event: str, frame: str, tag: int) -> bool:
        """Keep a broadcast in ``topic``'s history and deliver it, positioned, to every
        subscribed node, this one included. False if it could not even be buffered (nothing
        was kept and nobody gets it)."""

    @abstractmethod
    async def history(
        self, topic: str, since: Position | None, upto: int | None = None
    ) -> HistoryRead:
        """``topic``'s latest position and, if ``since`` is given, the broadcasts after it
        up to offset ``upto`` (default: the latest). Raises :class:`Unavailable`."""

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
