"""OTP-style supervision for pykka actors.

A ``Supervisor`` starts its children in order, restarts them when they die, and gives up —
stopping everything and reporting itself unhealthy — when they die too often::

    supervisor = Supervisor(
        [ChildSpec("cache", CacheActor.start), ChildSpec("limiter", make_limiter)],
        strategy="one_for_one",
        on_event=print,
    )
    supervisor.start()
    ref = supervisor.get("cache")   # the *current* ref: refs change on every restart
    ...
    supervisor.stop()               # blocking: from async code use asyncio.to_thread

Children must be ``SupervisedActor`` subclasses. pykka stops an actor when an exception escapes
a message sent with ``tell`` (an exception in an ``ask`` goes back to the caller and is not a
crash); ``SupervisedActor`` records why in ``on_failure`` and tells its supervisor when its
thread finishes, whatever the reason: a crash in a handler, in ``on_start`` or ``on_stop``, or a
``stop()`` from outside the supervisor. A subclass that overrides ``on_failure`` should call
``super().on_failure(...)`` so that the reason reaches the supervisor's events.

Why a plain object with one thread rather than a pykka actor: exit notices arrive on the dying
actors' threads. Restarting there would let two restarts race each other; a single supervisor
thread draining a queue serialises them, and ``stop()`` only has to join that thread to know
that no restart is in flight. ``get()`` is a dict lookup under a lock, cheap enough to call from
the asyncio loop, where an actor-based supervisor would need a message round trip.

Threads: ``ChildSpec.start`` runs on the thread calling ``start()`` and, for restarts, on the
supervisor thread; ``on_event`` runs on the supervisor thread (keep it quick; hand work to the
asyncio loop with ``loop.call_soon_threadsafe``). ``start()`` does not wait for a child's
``on_start``: messages sent to it queue up behind it anyway.

Restart intensity counts failures, not restarted children (as in OTP): one crash under
``rest_for_one`` that restarts three children is one restart. More than ``max_restarts``
within ``max_seconds`` and the supervisor gives up.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import pykka

from switchboard.actors.errors import ActorUnavailableError
from switchboard.actors.faults import InjectedFault, InjectFault, Stall

__all__ = ["ChildSpec", "SupervisedActor", "Supervisor", "SupervisorEvent"]

logger = logging.getLogger("switchboard.actors")

Strategy = Literal["one_for_one", "rest_for_one"]
EventKind = Literal["restart", "give_up", "child_failed"]

_STRATEGIES: tuple[Strategy, ...] = ("one_for_one", "rest_for_one")
_INTERNAL_STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class ChildSpec:
    """A named child; ``start`` builds and starts a fresh actor and returns its ref."""

    name: str
    start: Callable[[], pykka.ActorRef[Any]]


@dataclass(frozen=True)
class SupervisorEvent:
    """Something the server may want to log, count or surface in its health check."""

    kind: EventKind
    child: str
    reason: str


class _Lifeline:
    """What a supervised actor reports about its own life. Written on the actor's thread."""

    __slots__ = ("exited", "notify", "reason", "thread", "urn")

    def __init__(self, urn: str, notify: Callable[[_Lifeline], None] | None) -> None:
        self.urn = urn
        self.notify = notify
        self.reason: str | None = None
        self.thread: threading.Thread | None = None
        self.exited = threading.Event()

    def close(self) -> None:
        self.exited.set()
        if self.notify is not None:
            self.notify(self)


class _Adoption:
    """Collects the lifelines of supervised actors built while a child's ``start()`` runs."""

    def __init__(self, notify: Callable[[_Lifeline], None]) -> None:
        self.notify = notify
        self.lifelines: list[_Lifeline] = []


# ``Actor.__init__`` runs on the thread that calls ``start()``, so a thread-local lets the
# actor find its supervisor before its own thread exists: no window where it could die unseen.
_adopting = threading.local()


@contextmanager
def _adopt(notify: Callable[[_Lifeline], None]) -> Iterator[_Adoption]:
    adoption = _Adoption(notify)
    previous = getattr(_adopting, "current", None)
    _adopting.current = adoption
    try:
        yield adoption
    finally:
        _adopting.current = previous


class SupervisedActor(pykka.ThreadingActor):
    """A pykka actor that a ``Supervisor`` can watch and restart.

    Subclasses handle their own messages in ``on_receive`` and pass anything else to
    ``super().on_receive(message)``, which handles ``InjectFault``. Outside a supervisor it
    behaves like a plain ``ThreadingActor``.
    """

    #: A stuck actor must not keep the process alive after shutdown gave up waiting on it.
    use_daemon_thread = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        adoption: _Adoption | None = getattr(_adopting, "current", None)
        self._lifeline = _Lifeline(self.actor_urn, adoption.notify if adoption else None)
        if adoption is not None:
            adoption.lifelines.append(self._lifeline)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, InjectFault):
            raise InjectedFault(message.reason)
        if isinstance(message, Stall):
            time.sleep(message.seconds)
            return None
        return super().on_receive(message)

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exception_value is not None:
            self._lifeline.reason = f"{type(exception_value).__name__}: {exception_value}"
        elif exception_type is not None:
            self._lifeline.reason = exception_type.__name__

    def _actor_loop(self) -> None:
        # pykka has no public "my thread is finishing" hook, and this is the one place that
        # sees every way an actor ends. By now on_failure has recorded the reason, and pending
        # asks have been answered with ActorDeadError.
        self._lifeline.thread = threading.current_thread()
        try:
            super()._actor_loop()
        finally:
            self._lifeline.close()


@dataclass
class _Child:
    spec: ChildSpec
    ref: pykka.ActorRef[Any] | None = None
    lifeline: _Lifeline | None = None
    restarts: int = 0


@dataclass(frozen=True)
class _ChildExited:
    name: str
    lifeline: _Lifeline


@dataclass(frozen=True)
class _RestartFailed:
    name: str
    reason: str


_Notice = _ChildExited | _RestartFailed | None  # None asks the supervisor thread to finish


class Supervisor:
    """Starts, watches and restarts a fixed list of ``SupervisedActor`` children."""

    def __init__(
        self,
        children: list[ChildSpec],
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        on_event: Callable[[SupervisorEvent], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = [spec.name for spec in children]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique, got {names}")
        if strategy not in _STRATEGIES:
            raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
        if max_restarts < 0 or max_seconds <= 0:
            raise ValueError("max_restarts must be >= 0 and max_seconds > 0")
        self.strategy: Strategy = strategy
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self._on_event = on_event
        self._clock = clock
        self._children = [_Child(spec) for spec in children]
        self._index = {name: i for i, name in enumerate(names)}
        self._lock = threading.Lock()
        self._notices: queue.SimpleQueue[_Notice] = queue.SimpleQueue()
        self._restart_times: deque[float] = deque()
        self._state: Literal["new", "running", "gave_up", "stopped"] = "new"
        self._gave_up_reason: str | None = None
        self._thread: threading.Thread | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """True while running; False before ``start()``, after ``stop()`` or giving up."""
        with self._lock:
            return self._state == "running"

    @property
    def gave_up_reason(self) -> str | None:
        with self._lock:
            return self._gave_up_reason

    def start(self) -> None:
        """Start the children in order; if one fails to start, stop the others and raise."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError("Supervisor.start() can only be called once")
            self._state = "running"
        try:
            for child in self._children:
                self._start_child(child)
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(
            target=self._run, name="switchboard-supervisor", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the children in reverse order and wait for every actor thread to finish.

        Blocking; call it from a plain thread (``await asyncio.to_thread(sup.stop)``).
        Idempotent.
        """
        with self._lock:
            if self._state == "stopped":
                return
            self._state = "stopped"
        self._notices.put(None)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("supervisor thread did not finish within %ss", timeout)
        self._stop_children(self._children, timeout)

    def get(self, name: str) -> pykka.ActorRef[Any]:
        """Return the child's current ref, or raise ``ActorUnavailableError`` if it is down."""
        with self._lock:
            if name not in self._index:
                raise KeyError(f"no child named {name!r}; children are {list(self._index)}")
            if self._state == "gave_up":
                raise ActorUnavailableError(f"supervisor gave up: {self._gave_up_reason}")
            if self._state != "running":
                state = "not started" if self._state == "new" else "stopped"
                raise ActorUnavailableError(f"{name} is unavailable: supervisor is {state}")
            ref = self._children[self._index[name]].ref
        if ref is None or not ref.is_alive():
            raise ActorUnavailableError(f"{name} is down and being restarted")
        return ref

    def restart_counts(self) -> dict[str, int]:
        with self._lock:
            return {child.spec.name: child.restarts for child in self._children}

    # -- starting and stopping children -----------------------------------------------------

    def _start_child(self, child: _Child) -> None:
        name = child.spec.name
        with _adopt(functools.partial(self._child_exited, name)) as adoption:
            ref = child.spec.start()
        if not isinstance(ref, pykka.ActorRef):
            raise TypeError(f"child {name!r}: start() must return an ActorRef, got {ref!r}")
        lifeline = next((ll for ll in adoption.lifelines if ll.urn == ref.actor_urn), None)
        if lifeline is None:
            _stop_actor(ref, None, _INTERNAL_STOP_TIMEOUT)
            raise TypeError(
                f"child {name!r}: start() returned {ref}, which is not a SupervisedActor "
                "started by that call; subclass actors.SupervisedActor"
            )
        with self._lock:
            child.ref = ref
            child.lifeline = lifeline

    def _stop_children(self, children: list[_Child], timeout: float) -> None:
        for child in reversed(children):
            with self._lock:
                ref, lifeline = child.ref, child.lifeline
                child.ref = child.lifeline = None  # its exit notice is now expected: ignored
            if ref is not None:
                _stop_actor(ref, lifeline, timeout)

    def _child_exited(self, name: str, lifeline: _Lifeline) -> None:
        # Runs on the child's own thread, as its last act.
        self._notices.put(_ChildExited(name, lifeline))

    # -- the supervisor thread --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            notice = self._notices.get()
            if notice is None:
                return
            try:
                if self._handle(notice):
                    return
            except Exception:
                logger.exception("supervisor failed to handle %r", notice)

    def _handle(self, notice: _ChildExited | _RestartFailed) -> bool:
        """Deal with a child that went down. Returns True once the supervisor has given up."""
        index = self._index[notice.name]
        child = self._children[index]
        crashed: _Lifeline | None = None
        with self._lock:
            if self._state != "running":
                return False
            if isinstance(notice, _ChildExited):
                if child.ref is None or child.ref.actor_urn != notice.lifeline.urn:
                    return False  # stopped on purpose, or an earlier incarnation
                crashed = notice.lifeline
                reason = crashed.reason or "stopped unexpectedly"
            else:
                reason = notice.reason
            child.ref = child.lifeline = None
            now = self._clock()
            self._restart_times.append(now)
            while self._restart_times and self._restart_times[0] < now - self.max_seconds:
                self._restart_times.popleft()
            give_up = len(self._restart_times) > self.max_restarts
            if give_up:
                self._state = "gave_up"
                self._gave_up_reason = (
                    f"more than {self.max_restarts} restarts within {self.max_seconds}s; "
                    f"last failure: {notice.name}: {reason}"
                )
        self._emit("child_failed", notice.name, reason)
        if crashed is not None:
            _reap(crashed, _INTERNAL_STOP_TIMEOUT)
        if give_up:
            self._stop_children(self._children, _INTERNAL_STOP_TIMEOUT)
            self._emit("give_up", notice.name, self.gave_up_reason or reason)
            return True
        self._restart(index, reason)
        return False

    def _restart(self, index: int, reason: str) -> None:
        failed = self._children[index].spec.name
        last = index + 1 if self.strategy == "one_for_one" else len(self._children)
        affected = self._children[index:last]
        self._stop_children(affected[1:], _INTERNAL_STOP_TIMEOUT)
        for child in affected:
            name = child.spec.name
            with self._lock:
                if self._state != "running":
                    return
            try:
                self._start_child(child)
            except Exception as exc:
                logger.exception("restarting %s failed", name)
                self._notices.put(_RestartFailed(name, f"restart failed: {exc!r}"))
                return
            with self._lock:
                child.restarts += 1
            why = reason if name == failed else f"{failed} failed: {reason}"
            self._emit("restart", name, why)

    def _emit(self, kind: EventKind, child: str, reason: str) -> None:
        level = {"child_failed": logging.WARNING, "restart": logging.INFO}.get(kind, logging.ERROR)
        logger.log(level, "supervisor %s: %s (%s)", kind, child, reason)
        if self._on_event is None:
            return
        try:
            self._on_event(SupervisorEvent(kind, child, reason))
        except Exception:
            logger.exception("supervisor on_event callback failed")


def _stop_actor(ref: pykka.ActorRef[Any], lifeline: _Lifeline | None, timeout: float) -> None:
    try:
        ref.stop(block=True, timeout=timeout)
    except pykka.Timeout:
        logger.warning("%s did not stop within %ss", ref, timeout)
        return
    if lifeline is not None:
        _reap(lifeline, timeout)


def _reap(lifeline: _Lifeline, timeout: float) -> None:
    """Wait until the actor's thread has really finished, so that none outlives ``stop()``."""
    if lifeline.exited.wait(timeout) and lifeline.thread is not None:
        lifeline.thread.join(timeout)
