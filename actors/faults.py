"""Fault injection: crash a supervised actor on purpose, the way a real bug would.

``ref.tell(InjectFault("why"))`` makes any ``SupervisedActor`` raise ``InjectedFault`` from
``on_receive``; pykka then runs ``on_failure`` and stops the actor, and its supervisor restarts
it. Sent with ``ask`` the exception only goes back to the caller, exactly as for a real bug.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["InjectFault", "InjectedFault"]


@dataclass(frozen=True)
class InjectFault:
    """Message asking a supervised actor to crash."""

    reason: str = "injected"


class InjectedFault(RuntimeError):
    """Raised by a supervised actor that received ``InjectFault``."""
