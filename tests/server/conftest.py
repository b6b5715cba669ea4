from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.nodes import node
from tests.support.processes import ServerProcess


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """One node per test module, limits and presence off (see nodes.py; overrides the
    fixture of tests/conftest.py)."""
    with node() as running:
        yield running
