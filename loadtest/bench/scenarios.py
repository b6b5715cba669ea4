"""Every scenario by name, and how each one's repeated runs come down to the one reported."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .cluster import run_fanout_cluster
from .fanout import run_fanout
from .memory import run_memory
from .ping import run_ping
from .processes import CLUSTER, ServerSpec

Run = Callable[[ServerSpec, argparse.Namespace, Path], Awaitable[dict[str, Any]]]


async def fanout(spec: ServerSpec, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    if spec.kind == CLUSTER:
        return await run_fanout_cluster(spec, args, logdir)
    return await run_fanout(spec, args, logdir)


SCENARIOS: dict[str, Run] = {"fanout": fanout, "ping": run_ping, "memory": run_memory}
