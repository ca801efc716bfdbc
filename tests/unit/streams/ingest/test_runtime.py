"""The worker's process settings that the runtime owns."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streams.ingest.runtime import COLLECT_AFTER_OBJECTS, settle_collector


@pytest.fixture
def collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("collector")
def test_settling_freezes_what_lives_and_leaves_batches_in_flight_alone() -> None:
    gc.unfreeze()
    survivors = [[i] for i in range(1_000)]  # start-up objects: they live for the whole run
    settle_collector()
    assert gc.get_freeze_count() >= len(survivors)
    assert gc.get_threshold()[0] == COLLECT_AFTER_OBJECTS > 700
    runs: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            runs.append(info["generation"])

    gc.callbacks.append(count)
    try:
        # A batch in flight: thousands of containers alive at once, as records and outcomes
        batch = [(b"key", b"value", "topic", 0, i) for i in range(5_000)]
        del batch
    finally:
        gc.callbacks.remove(count)
    assert runs == []  # at Python's default of 700 this ran the collector several times
