"""Run phoenix.js scenarios (tests/client/js/scenarios.js) against a real node, in parallel.

A test names its scenario with ``@pytest.mark.phoenix_js("name")`` and takes the ``scenario``
fixture: the :class:`ScenarioRun` of that scenario (several tests may share one run). A test
that needs several runs names them all in the mark and asks ``phoenix_js.result(name)``. All
scenarios of the selected tests start together when the module's first test needs one, a few
Node processes at a time, each against the module's ``server`` with its own users and topics.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.client.runner import ScenarioPool, ScenarioRun
from tests.support.processes import ROOT, ServerProcess


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "phoenix_js(name): the tests/client/js/scenarios.js scenario a test checks"
    )


@pytest.fixture(scope="module")
def phoenix_js(server: ServerProcess, request: pytest.FixtureRequest) -> Iterator[ScenarioPool]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (scripts/test.sh installs Node packages with npm ci)")
    if (
        not (ROOT / "node_modules" / "phoenix").is_dir()
        or not (ROOT / "node_modules" / "ws").is_dir()
    ):
        pytest.fail("node_modules lacks phoenix or ws: run `npm ci` in the repository root")
    pool = ScenarioPool(server, node)
    module = request.module
    for item in request.session.items:
        marker = item.get_closest_marker("phoenix_js")
        if marker is not None and getattr(item, "module", None) is module:
            for name in marker.args:
                pool.start(name)
    yield pool
    pool.close()


@pytest.fixture
def scenario(phoenix_js: ScenarioPool, request: pytest.FixtureRequest) -> ScenarioRun:
    marker = request.node.get_closest_marker("phoenix_js")
    assert marker is not None, "mark the test with @pytest.mark.phoenix_js(<scenario>)"
    return phoenix_js.result(marker.args[0]).check()
