"""Shared fixtures: a real Switchboard node in a subprocess for integration suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.processes import ServerProcess, running_server


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """One node per test module (limits off so tests can open many sockets quickly)."""
    with running_server({"SWITCHBOARD_LIMITS": "off"}) as node:
        yield node
