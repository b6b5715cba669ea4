"""Every scenario by name, and how each one's repeated runs come down to the one reported."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .cluster import run_fanout_cluster
from .connrate import run_connrate
from .fanout import run_fanout
from .idle import run_idle
from .joinstorm import run_joinstorm
from .memory import run_memory
from .ping import run_ping
from .processes import CLUSTER, ServerSpec
from .reqreply import run_reqreply

Run = Callable[[ServerSpec, argparse.Namespace, Path], Awaitable[dict[str, Any]]]


async def fanout(spec: ServerSpec, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    if spec.kind == CLUSTER:
        return await run_fanout_cluster(spec, args, logdir)
    return await run_fanout(spec, args, logdir)


SCENARIOS: dict[str, Run] = {
    "fanout": fanout,
    "ping": run_ping,
    "memory": run_memory,
    "joinstorm": run_joinstorm,
    "reqreply": run_reqreply,
    "connrate": run_connrate,
    "idle50k": run_idle,
}
DEFAULT_SCENARIOS = ("fanout", "ping", "memory")  # the Node-generated ones take minutes more
NODE_SCENARIOS = ("joinstorm", "reqreply", "connrate", "idle50k")
