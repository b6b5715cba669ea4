"""Fixtures every cluster test module shares (each module starts its own ``cluster``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from switchboard.server.devcluster import LocalCluster
from tests.cluster.helpers import agent_for
from tests.support.phoenix_agent import Agent


@pytest.fixture
def agent(cluster: LocalCluster) -> Iterator[Agent]:
    """A Node agent of phoenix.js clients in front of the module's cluster."""
    with agent_for(cluster) as agent:
        yield agent
