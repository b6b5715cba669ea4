from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any

import pykka
import pytest

from switchboard.actors import (
    ActorUnavailableError,
    ChildSpec,
    InjectedFault,
    InjectFault,
    SupervisedActor,
    Supervisor,
)


class Worker(SupervisedActor):
    def __init__(self, name: str, journal: list[str]) -> None:
        super().__init__()
        self.name = name
        self.journal = journal
        journal.append(f"start {name}")

    def on_stop(self) -> None:
        self.journal.append(f"stop {self.name}")

    def on_receive(self, message: Any) -> Any:
        if message == "ping":
            return f"pong from {self.name}"
        return super().on_receive(message)


class FailsOnStart(SupervisedActor):
    def on_start(self) -> None:
        raise RuntimeError("cannot start")


def worker(name: str, journal: list[str] | None = None) -> ChildSpec:
    log = journal if journal is not None else []
    return ChildSpec(name, lambda: Worker.start(name, log))


def crash(supervisor: Supervisor, name: str, reason: str = "injected") -> pykka.ActorRef[Any]:
    ref = supervisor.get(name)
    ref.tell(InjectFault(reason))
    return ref


def test_children_start_in_order_and_stop_in_reverse_order(supervise):
    journal: list[str] = []
    supervisor = supervise([worker(name, journal) for name in "abc"])
    supervisor.stop()
    assert journal == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]


def test_get_returns_a_ref_to_the_running_child(supervise):
    supervisor = supervise([worker("a"), worker("b")])
    assert supervisor.get("b").ask("ping", timeout=2) == "pong from b"
    assert supervisor.healthy


def test_a_child_that_crashes_is_restarted_within_a_second(supervise, events):
    supervisor = supervise([worker("w")])
    old = crash(supervisor, "w", "kaboom")

    (restart,) = events.wait_for("restart", "w", timeout=1.0)

    assert "InjectedFault: kaboom" in restart.reason
    assert events.of("child_failed", "w")[0].reason == "InjectedFault: kaboom"
    new = supervisor.get("w")
    assert new is not old and not old.is_alive()
    assert new.ask("ping", timeout=2) == "pong from w"
    assert supervisor.restart_counts() == {"w": 1}


def test_an_exception_in_an_ask_goes_back_to_the_caller_and_is_not_a_crash(supervise, events):
    supervisor = supervise([worker("w")])
    ref = supervisor.get("w")

    with pytest.raises(InjectedFault, match="only asking"):
        ref.ask(InjectFault("only asking"), timeout=2)

    assert ref.ask("ping", timeout=2) == "pong from w"
    assert supervisor.get("w") is ref
    assert events.events == []


def test_one_for_one_restarts_only_the_failed_child(supervise, events):
    supervisor = supervise([worker(name) for name in "abc"])
    before = {name: supervisor.get(name) for name in "abc"}

    crash(supervisor, "b")
    events.wait_for("restart", "b")

    assert supervisor.get("a") is before["a"]
    assert supervisor.get("c") is before["c"]
    assert supervisor.get("b") is not before["b"]
    assert supervisor.restart_counts() == {"a": 0, "b": 1, "c": 0}
    assert [e.child for e in events.of("restart")] == ["b"]


def test_rest_for_one_restarts_the_failed_child_and_all_started_after_it(supervise, events):
    journal: list[str] = []
    supervisor = supervise([worker(name, journal) for name in "abcd"], strategy="rest_for_one")
    first_a = supervisor.get("a")
    del journal[:]

    crash(supervisor, "b")
    events.wait_for("restart", count=3)

    # b crashed (no on_stop), the younger ones are stopped youngest first, then all restart.
    assert journal == ["stop d", "stop c", "start b", "start c", "start d"]
    assert supervisor.get("a") is first_a
    assert [e.child for e in events.of("restart")] == ["b", "c", "d"]
    assert events.of("restart", "d")[0].reason.startswith("b failed:")
    assert supervisor.restart_counts() == {"a": 0, "b": 1, "c": 1, "d": 1}
    assert all(supervisor.get(name).ask("ping", timeout=2) for name in "abcd")


def test_a_child_stopped_from_outside_its_supervisor_is_restarted(supervise, events):
    supervisor = supervise([worker("w")])
    supervisor.get("w").stop()

    (failed,) = events.wait_for("child_failed", "w")
    events.wait_for("restart", "w")

    assert failed.reason == "stopped unexpectedly"
    assert supervisor.get("w").ask("ping", timeout=2) == "pong from w"


def test_a_child_that_keeps_crashing_makes_the_supervisor_give_up(supervise, events):
    supervisor = supervise([worker("bystander"), worker("w")], max_restarts=2)
    bystander = supervisor.get("bystander")

    for restarts in (1, 2):
        crash(supervisor, "w")
        events.wait_for("restart", "w", count=restarts)
    crash(supervisor, "w", "third strike")
    (give_up,) = events.wait_for("give_up")

    assert give_up.child == "w"
    assert not supervisor.healthy
    assert supervisor.gave_up_reason is not None
    assert "more than 2 restarts" in supervisor.gave_up_reason
    assert "third strike" in supervisor.gave_up_reason
    assert not bystander.is_alive()
    assert pykka.ActorRegistry.get_all() == []
    assert supervisor.restart_counts() == {"bystander": 0, "w": 2}
    with pytest.raises(ActorUnavailableError, match="gave up"):
        supervisor.get("bystander")


def test_a_child_that_fails_in_on_start_makes_it_give_up_instead_of_looping(supervise, events):
    supervisor = supervise([ChildSpec("fragile", FailsOnStart.start)], max_restarts=3)

    events.wait_for("give_up")

    assert len(events.of("child_failed")) == 4
    assert len(events.of("restart")) == 3
    assert not supervisor.healthy


def test_restarts_further_apart_than_max_seconds_do_not_add_up(supervise, events, clock):
    supervisor = supervise([worker("w")], max_restarts=1, max_seconds=10.0, clock=clock)

    for restarts in (1, 2, 3):
        crash(supervisor, "w")
        events.wait_for("restart", "w", count=restarts)
        clock.advance(11.0)

    assert supervisor.healthy
    assert supervisor.restart_counts() == {"w": 3}


def test_one_restart_too_many_within_max_seconds_gives_up(supervise, events, clock):
    supervisor = supervise([worker("w")], max_restarts=1, max_seconds=10.0, clock=clock)

    crash(supervisor, "w")
    events.wait_for("restart", "w")
    clock.advance(9.0)
    crash(supervisor, "w")
    events.wait_for("give_up")

    assert supervisor.restart_counts() == {"w": 1}


def test_a_start_function_that_fails_during_a_restart_counts_toward_giving_up(supervise, events):
    calls = itertools.count()

    def start() -> pykka.ActorRef[Any]:
        if next(calls) > 0:
            raise OSError("no socket")
        return Worker.start("w", [])

    supervisor = supervise([ChildSpec("w", start)], max_restarts=2)
    crash(supervisor, "w")
    events.wait_for("give_up")

    reasons = [e.reason for e in events.of("child_failed")]
    assert reasons[0] == "InjectedFault: injected"
    assert reasons[1:] == ["restart failed: OSError('no socket')"] * 2
    assert supervisor.restart_counts() == {"w": 0}


def test_get_raises_actor_unavailable_while_a_child_is_being_restarted(supervise, events):
    restarting = threading.Event()
    proceed = threading.Event()
    calls = itertools.count()

    def start() -> pykka.ActorRef[Any]:
        if next(calls) > 0:
            restarting.set()
            assert proceed.wait(5)
        return Worker.start("w", [])

    supervisor = supervise([ChildSpec("w", start)])
    crash(supervisor, "w")
    assert restarting.wait(2)

    with pytest.raises(ActorUnavailableError, match="down"):
        supervisor.get("w")
    assert supervisor.healthy

    proceed.set()
    events.wait_for("restart", "w")
    assert supervisor.get("w").ask("ping", timeout=2) == "pong from w"


def test_stop_leaves_no_actor_thread_of_the_tree_alive(events):
    before = set(threading.enumerate())
    supervisor = Supervisor([worker(name) for name in "abc"], on_event=events)
    supervisor.start()
    crash(supervisor, "b")
    events.wait_for("restart", "b")
    assert set(threading.enumerate()) - before

    supervisor.stop()

    assert set(threading.enumerate()) - before == set()
    assert pykka.ActorRegistry.get_all() == []
    assert not supervisor.healthy
    with pytest.raises(ActorUnavailableError):
        supervisor.get("a")
    supervisor.stop()  # idempotent


def test_a_failure_to_start_stops_the_children_already_started():
    journal: list[str] = []

    def broken() -> pykka.ActorRef[Any]:
        raise OSError("port in use")

    supervisor = Supervisor([worker("a", journal), ChildSpec("b", broken)])
    with pytest.raises(OSError, match="port in use"):
        supervisor.start()

    assert journal == ["start a", "stop a"]
    assert not supervisor.healthy


def test_a_child_that_is_not_a_supervised_actor_is_refused():
    class Plain(pykka.ThreadingActor):
        pass

    supervisor = Supervisor([ChildSpec("plain", Plain.start)])
    with pytest.raises(TypeError, match="not a SupervisedActor"):
        supervisor.start()


def test_get_of_an_unknown_child_is_a_key_error(supervise):
    supervisor = supervise([worker("a")])
    with pytest.raises(KeyError, match="no child named 'nope'"):
        supervisor.get("nope")


def test_a_failing_on_event_callback_does_not_stop_supervision(supervise, events, caplog):
    def on_event(event: Any) -> None:
        events(event)
        raise RuntimeError("the logger is broken")

    supervisor = supervise([worker("w")], on_event=on_event)
    crash(supervisor, "w")
    events.wait_for("restart", "w")

    assert supervisor.get("w").ask("ping", timeout=2) == "pong from w"
    assert "on_event callback failed" in caplog.text


def test_events_are_logged_on_the_switchboard_actors_logger(supervise, events, caplog):
    caplog.set_level(logging.INFO, logger="switchboard.actors")
    supervisor = supervise([worker("w")])
    crash(supervisor, "w")
    events.wait_for("restart", "w")

    mine = [r for r in caplog.records if r.name == "switchboard.actors"]
    assert [r.levelname for r in mine] == ["WARNING", "INFO"]


def test_invalid_configuration_is_refused_before_anything_starts():
    with pytest.raises(ValueError, match="unique"):
        Supervisor([worker("a"), worker("a")])
    with pytest.raises(ValueError, match="strategy"):
        Supervisor([worker("a")], strategy="one_for_all")  # type: ignore[arg-type]


def test_start_twice_is_a_programming_error(supervise):
    supervisor = supervise([worker("a")])
    with pytest.raises(RuntimeError, match="only be called once"):
        supervisor.start()


def test_a_restart_does_not_wait_for_a_slow_sibling(supervise, events):
    # The supervisor never asks its children anything, so a busy sibling cannot delay a restart.
    release = threading.Event()

    class Busy(SupervisedActor):
        def on_receive(self, message: Any) -> Any:
            if message == "hold":
                release.wait(5)
                return None
            return super().on_receive(message)

    supervisor = supervise([ChildSpec("busy", Busy.start), worker("w")])
    supervisor.get("busy").tell("hold")
    try:
        started = time.monotonic()
        crash(supervisor, "w")
        events.wait_for("restart", "w", timeout=1.0)
        assert time.monotonic() - started < 1.0
    finally:
        release.set()
