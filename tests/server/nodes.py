"""Switchboard nodes for this folder's integration tests.

Limits and presence are off unless ``env`` turns them on: these tests count frames exactly,
and presence diffs would interleave with them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tests.support.processes import ServerProcess, running_server


@contextlib.contextmanager
def node(env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    settings = {"SWITCHBOARD_LIMITS": "off", "SWITCHBOARD_PRESENCE": "off", **(env or {})}
    with running_server(settings) as server:
        yield server
