"""The garbage collector's settings under ``switchboard serve`` (``SWITCHBOARD_GC_THRESHOLD``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from switchboard.server.config import Settings
from switchboard.server.runner import tune_collector


@pytest.fixture
def collector() -> Iterator[tuple[int, int, int]]:
    """Python's settings before the test, put back after it."""
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    yield before
    if gc.get_freeze_count() != frozen:
        gc.unfreeze()
    gc.set_threshold(*before)


def test_serve_freezes_what_the_start_made_and_scans_young_objects_less_often(
    collector: tuple[int, int, int],
) -> None:
    threshold = Settings.from_env({}).gc_threshold
    assert threshold > collector[0], "the default spaces young collections out"
    tune_collector(threshold)
    assert gc.get_threshold() == (threshold, collector[1], collector[2])
    assert gc.get_freeze_count() > 0, "objects alive at start are no longer scanned"


def test_a_threshold_of_0_leaves_the_collector_as_it_is(collector: tuple[int, int, int]) -> None:
    frozen = gc.get_freeze_count()
    tune_collector(Settings.from_env({"SWITCHBOARD_GC_THRESHOLD": "0"}).gc_threshold)
    assert gc.get_threshold() == collector
    assert gc.get_freeze_count() == frozen
