from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest

from switchboard.actors import Supervisor, SupervisorEvent


class EventRecorder:
    """An ``on_event`` callback that tests can wait on."""

    def __init__(self) -> None:
        self._events: list[SupervisorEvent] = []
        self._changed = threading.Condition()

    def __call__(self, event: SupervisorEvent) -> None:
        with self._changed:
            self._events.append(event)
            self._changed.notify_all()

    @property
    def events(self) -> list[SupervisorEvent]:
        with self._changed:
            return list(self._events)

    def of(self, kind: str, child: str | None = None) -> list[SupervisorEvent]:
        return [e for e in self.events if e.kind == kind and child in (None, e.child)]

    def wait_for(
        self, kind: str, child: str | None = None, count: int = 1, timeout: float = 5.0
    ) -> list[SupervisorEvent]:
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.of(kind, child)) >= count, timeout)
        assert arrived, f"no {count} x {kind} {child or ''} within {timeout}s: {self.events}"
        return self.of(kind, child)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _no_actor_outlives_its_test() -> Iterator[None]:
    yield
    leaked = pykka.ActorRegistry.get_all()
    pykka.ActorRegistry.stop_all(block=True, timeout=5)
    assert not leaked, f"the test left actors running: {leaked}"


@pytest.fixture
def events() -> EventRecorder:
    return EventRecorder()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def supervise(events: EventRecorder) -> Iterator[Callable[..., Supervisor]]:
    """Build and start a supervisor that reports to ``events``; stopped after the test."""
    made: list[Supervisor] = []

    def make(children: Any, **options: Any) -> Supervisor:
        options.setdefault("on_event", events)
        supervisor = Supervisor(children, **options)
        made.append(supervisor)
        supervisor.start()
        return supervisor

    yield make
    for supervisor in made:
        supervisor.stop()
