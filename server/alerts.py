"""What an operator must see at once, worked out from the cluster view every second: a lost
node, pub/sub (Redis) down, actors restarting in a loop or given up, a node draining. Each
alert lasts while its condition does, with the time it started; its start and end go to
the recent events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

#: An actor restarted this often within the last minute is restarting in a loop.
RESTART_LOOP = 3

Record = Callable[[str, str | None, str], None]


class Alerts:
    def __init__(self) -> None:
        self._active: dict[str, dict[str, Any]] = {}

    def update(
        self, samples: Iterable[dict[str, Any]], lost: Iterable[dict[str, Any]], record: Record
    ) -> list[dict[str, Any]]:
        """The alerts the view shows now, oldest first; ``record(kind, node, message)``
        gets each alert's start and end."""
        now = time.time()
        found: dict[str, dict[str, Any]] = {}

        def alert(
            key: str, kind: str, severity: str, node: str, message: str, since: float
        ) -> None:
            found[key] = {
                "id": key,
                "kind": kind,
                "severity": severity,
                "node": node,
                "message": message,
                "since": since,
            }

        for gone in lost:
            held = gone["held"]
            alert(
                f"lost:{gone['name']}",
                "node_lost",
                "critical",
                gone["name"],
                f"{gone['name']} is lost: no word since it last reported; it held "
                f"{plural(held['connections'], 'connection')} in {plural(held['topics'], 'topic')}",
                gone["last_seen"],
            )
        for sample in samples:
            name = sample["name"]
            pubsub = sample.get("pubsub", {})
            if not pubsub.get("connected", True):
                alert(
                    f"pubsub:{name}",
                    "pubsub_down",
                    "critical",
                    name,
                    f"{name}: pub/sub ({pubsub.get('backend')}) is down"
                    + (f": {pubsub['reason']}" if pubsub.get("reason") else "")
                    + "; its clients only hear each other",
                    now,
                )
            actors = sample.get("actors", {})
            if actors.get("healthy") is False:
                alert(
                    f"actors:{name}",
                    "actors_down",
                    "critical",
                    name,
                    f"{name}: the actor supervisor gave up ({actors.get('gave_up')})",
                    now,
                )
            for actor, count in (actors.get("restarts_last_minute") or {}).items():
                if count >= RESTART_LOOP:
                    alert(
                        f"restarts:{name}:{actor}",
                        "restart_loop",
                        "warning",
                        name,
                        f"{name}: the {actor} actor restarted {count} times in the last minute",
                        now,
                    )
            draining = sample.get("draining")
            if draining:
                alert(
                    f"draining:{name}",
                    "draining",
                    "warning",
                    name,
                    f"{name} is draining: "
                    f"{plural(draining['sockets_left'], 'socket')} left to move",
                    float(draining["since"]),
                )

        for key, entry in found.items():
            started = self._active.get(key)
            if started is None:
                record("alert", entry["node"], entry["message"])
            elif entry["kind"] in ("pubsub_down", "actors_down", "restart_loop"):
                entry["since"] = started["since"]  # started when first seen
        for key, entry in self._active.items():
            if key not in found:
                lasted = now - entry["since"]
                record(
                    "resolved", entry["node"], f"resolved after {lasted:.0f} s: {entry['message']}"
                )
        self._active = found
        return sorted(found.values(), key=lambda a: (a["since"], a["id"]))


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
