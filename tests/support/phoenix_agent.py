"""The Python side of tests/support/js/agent.js: one Node process holding phoenix.js clients.

Commands go to the agent as JSON lines on stdin; every callback it reports comes back as a
JSON line and lands in ``Agent.events``. Waits block on a condition until an event shows up
(bounded, never a sleep). Also the helpers that read ``Presence.list()`` listings.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ROOT

AGENT = Path(__file__).parent / "js" / "agent.js"
WAIT = 5.0

Event = dict[str, Any]
Listing = list[dict[str, Any]]


class Agent:
    """One Node process holding phoenix.js clients; ``events`` is everything it reported.

    ``endpoint`` is the socket URL (``ws://host:port/socket``), ``token`` makes a socket token
    for a user id, ``wait`` bounds every wait that has no timeout of its own, and
    ``reconnect=False`` turns phoenix.js's reconnects and rejoins off for every client.
    """

    def __init__(
        self,
        endpoint: str,
        token: Callable[[str], str],
        *,
        wait: float = WAIT,
        reconnect: bool = True,
    ) -> None:
        node_binary = shutil.which("node")
        if node_binary is None:
            pytest.fail("node is not installed")
        if not (ROOT / "node_modules" / "phoenix").is_dir():
            pytest.fail("node_modules lacks phoenix: run `npm ci` in the repository root")
        self.token = token
        self.timeout = wait
        self.reconnect = reconnect
        self.events: list[Event] = []
        self.stderr: list[str] = []
        self.users: dict[str, str] = {}
        self._seq = 0
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [node_binary, str(AGENT), endpoint],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._readers = [
            threading.Thread(target=self._read_events, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_events(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                event = json.loads(line)
                with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for line in self.process.stderr:
                self.stderr.append(line)

    def send(self, op: str, **fields: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()

    def wait_until(self, what: str, check: Callable[[], Any], timeout: float | None = None) -> Any:
        """Block until ``check()`` (run under the lock) returns something truthy."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                errors = [e for e in self.events if e["ev"] == "agent_error"]
                assert not errors, f"the Node agent failed: {errors}"
                result = check()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    tail = json.dumps(self.events[-15:], indent=1)
                    pytest.fail(
                        f"timed out after {timeout}s waiting for {what}\nlast events: {tail}\n"
                        f"stderr: {''.join(self.stderr)[-2000:]}",
                        pytrace=False,
                    )
                self._changed.wait(remaining)

    def wait_event(
        self,
        what: str,
        match: Callable[[Event], bool],
        since: int = 0,
        timeout: float | None = None,
    ) -> Event:
        def check() -> Event | None:
            return next((e for e in self.events[since:] if match(e)), None)

        return self.wait_until(what, check, timeout)  # type: ignore[no-any-return]

    def mark(self) -> int:
        with self._changed:
            return len(self.events)

    def of(self, id: str, ev: str, since: int = 0, **match: Any) -> list[Event]:
        with self._changed:
            return [
                e
                for e in self.events[since:]
                if e["id"] == id and e["ev"] == ev and all(e.get(k) == v for k, v in match.items())
            ]

    # -- client operations

    def connect(self, id: str, user: str, addr: str | None = None, wait: bool = True) -> None:
        """A client ``id`` for ``user``, its socket bound to the source address ``addr``."""
        self.users[id] = user
        since = self.mark()
        fields: dict[str, Any] = {"token": self.token(user)}
        if addr is not None:
            fields["addr"] = addr
        if not self.reconnect:
            fields["reconnect"] = False
        self.send("connect", id=id, **fields)
        if wait:
            self.wait_event(f"{id} open", lambda e: e["ev"] == "open" and e["id"] == id, since)

    def connect_with(self, id: str, params: dict[str, Any]) -> None:
        """A client ``id`` whose socket sends ``params`` (for apps with their own connect)."""
        fields: dict[str, Any] = {"params": params}
        if not self.reconnect:
            fields["reconnect"] = False
        self.send("connect", id=id, **fields)

    def join(
        self,
        id: str,
        topic: str,
        wait: bool = True,
        *,
        payload: dict[str, Any] | None = None,
        events: tuple[str, ...] = (),
        expect: str = "ok",
        recover: bool = False,
    ) -> Event | None:
        """Join ``topic`` (recording ``events`` as messages) and wait for a reply ``expect``.

        ``recover`` makes it the README's recovery client: params are a function that sends
        ``since`` (the latest message's ref, or the last join reply's position) on rejoins.
        """
        since = self.mark()
        fields: dict[str, Any] = {"payload": payload or {}, "events": list(events)}
        if recover:
            fields["recover"] = True
        self.send("join", id=id, topic=topic, **fields)
        if not wait:
            return None
        reply = self.wait_event(
            f"{id} join reply",
            lambda e: e["ev"] == "join" and e["id"] == id and e["topic"] == topic,
            since,
        )
        assert reply["status"] == expect, reply
        return reply

    def messages(self, id: str, topic: str, event: str) -> list[Any]:
        """Payloads of ``event`` messages client ``id`` received on ``topic``, in order."""
        return [e["payload"] for e in self.of(id, "message", topic=topic, event=event)]

    def push(self, id: str, topic: str, event: str, payload: Any = None) -> Event:
        self._seq += 1
        seq = self._seq
        self.send("push", id=id, topic=topic, event=event, payload=payload or {}, seq=seq)
        return self.wait_event(  # type: ignore[no-any-return]
            f"{id} reply to {event}", lambda e: e["ev"] == "reply" and e.get("seq") == seq
        )

    def shout(self, id: str, topic: str, n: int) -> None:
        """A ``shout`` (no reply; every member, sender included, gets it once)."""
        self.send("push", id=id, topic=topic, event="shout", payload={"from": id, "n": n}, seq=0)

    def list(self, id: str, topic: str) -> Listing:
        self._seq += 1
        seq = self._seq
        self.send("list", id=id, topic=topic, seq=seq)
        event = self.wait_event(
            f"{id} list", lambda e: e["ev"] == "list" and e["id"] == id and e["seq"] == seq
        )
        return list(event["list"])

    def wait_list(
        self,
        id: str,
        topic: str,
        want: Callable[[Listing], bool],
        what: str,
        timeout: float | None = None,
        since: int = 0,
    ) -> Listing:
        """Wait until the client's latest onSync list (since ``since``) satisfies ``want``."""

        def check() -> Listing | None:
            syncs = [
                e
                for e in self.events[since:]
                if e["id"] == id and e["ev"] == "sync" and e["topic"] == topic
            ]
            if syncs and want(syncs[-1]["list"]):
                return list(syncs[-1]["list"])
            return None

        return self.wait_until(f"{id}: {what}", check, timeout)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.send("exit")
        if self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        for reader in self._readers:
            reader.join(5)


# -- presence lists -----------------------------------------------------------------------------


def shape(listing: Listing) -> dict[str, int]:
    """key -> number of metas."""
    return {entry["key"]: len(entry["metas"]) for entry in listing}


def refs(listing: Listing) -> dict[str, list[str]]:
    return {entry["key"]: sorted(m["phx_ref"] for m in entry["metas"]) for entry in listing}


def has_shape(want: dict[str, int]) -> Callable[[Listing], bool]:
    return lambda listing: shape(listing) == want
