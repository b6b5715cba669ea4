"""Fault injection: crash a supervised actor on purpose, the way a real bug would.

``ref.tell(InjectFault("why"))`` makes any ``SupervisedActor`` raise ``InjectedFault`` from
``on_receive``; pykka then runs ``on_failure`` and stops the actor, and its supervisor restarts
it. Sent with ``ask`` the exception only goes back to the caller, exactly as for a real bug.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["InjectFault", "InjectedFault", "Stall"]


@dataclass(frozen=True)
class InjectFault:
    """Message asking a supervised actor to crash."""

    reason: str = "injected"


@dataclass(frozen=True)
class Stall:
    """Message asking a supervised actor to block its thread for ``seconds`` (a slow actor)."""

    seconds: float


class InjectedFault(RuntimeError):
    """Raised by a supervised actor that received ``InjectFault``."""
