"""A well-behaved client that keeps using the node while a test attacks it.

It joins ``test:bystander`` and sends a ``ping`` through the channel every 100 ms from its own
thread, timing each reply. The attack tests assert loosely on it (it stays connected, every
ping is answered within :data:`ANSWER_WITHIN`) and print its figures at the end of the run.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from switchboard.client import Client, Closed, NoFrame
from tests.support.nodes import unique_user
from tests.support.processes import ServerProcess

INTERVAL = 0.1
ANSWER_WITHIN = 2.0
MIN_PINGS = 10
#: (attack, figures) of every bystander so far; printed by conftest's terminal summary.
REPORTS: list[tuple[str, str]] = []


@dataclass
class Figures:
    rtts: list[float] = field(default_factory=list)
    unanswered: int = 0
    closed: str | None = None

    def summary(self) -> str:
        if not self.rtts:
            return f"no ping answered (unanswered {self.unanswered}, closed {self.closed})"
        ordered = sorted(self.rtts)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        state = f"closed: {self.closed}" if self.closed else "connected"
        return (
            f"{len(ordered)} pings, p50 {statistics.median(ordered) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms, "
            f"unanswered {self.unanswered}, {state}"
        )


@contextmanager
def bystander(
    server: ServerProcess,
    attack: str,
    expected_error: Callable[[dict[str, Any]], bool] | None = None,
) -> Iterator[Figures]:
    """Ping ``server`` every 100 ms while the block runs; then check and record the figures.
    The attack must log no error but those ``expected_error`` accepts."""
    figures = Figures()
    logged_before = len(server.logs)
    stop = threading.Event()
    joined = threading.Event()

    def run() -> None:
        try:
            with Client.connect(server.socket_url(unique_user("bystander")), history=False) as c:
                c.joined("test:bystander")
                joined.set()
                while not stop.is_set():
                    sent = time.perf_counter()
                    try:
                        c.call("test:bystander", "ping", {"n": 1}, timeout=ANSWER_WITHIN)
                        figures.rtts.append(time.perf_counter() - sent)
                    except NoFrame:
                        figures.unanswered += 1
                    stop.wait(max(0.0, sent + INTERVAL - time.perf_counter()))
        except Closed as exc:
            figures.closed = str(exc.code)
        except Exception as exc:  # reported through the figures, asserted below
            figures.closed = repr(exc)
        finally:
            joined.set()

    thread = threading.Thread(target=run, name="bystander", daemon=True)
    thread.start()
    assert joined.wait(10), "the bystander could not join"
    assert figures.closed is None, f"the bystander could not join: {figures.closed}"
    try:
        yield figures
        # A short attack still gets ten pings' worth of figures (they run on meanwhile).
        deadline = time.monotonic() + MIN_PINGS * INTERVAL + ANSWER_WITHIN
        while len(figures.rtts) + figures.unanswered < MIN_PINGS and thread.is_alive():
            assert time.monotonic() < deadline, "the bystander stalled"
            time.sleep(INTERVAL / 2)
    finally:
        stop.set()
        thread.join(ANSWER_WITHIN + 5)
    parser = getattr(server, "parser", None)
    REPORTS.append((f"{attack} ({parser})" if parser else attack, figures.summary()))
    errors = [
        e
        for e in server.logs[logged_before:]
        if e.get("level") in ("error", "critical") and not (expected_error and expected_error(e))
    ]
    assert not errors, f"the attack was logged as errors: {errors[:3]}"
    assert figures.closed is None, f"the bystander lost its connection: {figures.summary()}"
    assert figures.unanswered == 0, f"the bystander's pings went unanswered: {figures.summary()}"
    assert figures.rtts, "the bystander sent no ping"
