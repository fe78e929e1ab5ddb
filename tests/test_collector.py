"""The server's cycle-collector pace (gateway/server/collector.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway.server import collector
from gateway.server.collector import YOUNG_CEILING, YOUNG_THRESHOLD, pace_collector


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    callbacks = list(gc.callbacks)
    try:
        yield
    finally:
        gc.callbacks[:] = callbacks
        gc.set_threshold(*before)


def test_the_young_generation_is_collected_less_often_and_the_older_as_before(
    restored: None,
) -> None:
    gc.set_threshold(700, 11, 12)
    pace_collector()
    pace_collector()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 11, 12)
    assert YOUNG_THRESHOLD > 700
    assert gc.callbacks.count(collector._after_collection) == 1, "hooked once"


@pytest.mark.parametrize(
    ("young", "generation", "collected", "uncollectable", "after"),
    [
        (YOUNG_THRESHOLD, 0, 0, 0, 2 * YOUNG_THRESHOLD),  # freed nothing: wait twice as long
        (4 * YOUNG_THRESHOLD, 1, 0, 0, 8 * YOUNG_THRESHOLD),  # a middle collection counts too
        (YOUNG_CEILING, 0, 0, 0, YOUNG_CEILING),  # never past the ceiling
        (YOUNG_CEILING // 2 + 1, 0, 0, 0, YOUNG_CEILING),
        (8 * YOUNG_THRESHOLD, 0, 3, 0, YOUNG_THRESHOLD),  # freed a cycle: back to the base
        (8 * YOUNG_THRESHOLD, 1, 0, 1, YOUNG_THRESHOLD),  # found an uncollectable one
        (8 * YOUNG_THRESHOLD, 2, 0, 0, 8 * YOUNG_THRESHOLD),  # a full collection: no change
        (8 * YOUNG_THRESHOLD, 2, 5, 0, 8 * YOUNG_THRESHOLD),
    ],
)
def test_the_young_threshold_follows_what_a_collection_freed(
    restored: None, young: int, generation: int, collected: int, uncollectable: int, after: int
) -> None:
    gc.set_threshold(young, 11, 12)
    info = {"generation": generation, "collected": collected, "uncollectable": uncollectable}
    collector._after_collection("start", info)
    assert gc.get_threshold() == (young, 11, 12), "nothing is decided before it ran"
    collector._after_collection("stop", info)
    assert gc.get_threshold() == (after, 11, 12)


def test_a_real_cycle_brings_the_pace_back_to_the_base(restored: None) -> None:
    pace_collector()
    gc.collect(0)  # whatever is young now; then nothing but the cycle below is garbage
    gc.set_threshold(YOUNG_CEILING, 11, 12)

    class Node:
        other: object

    first, second = Node(), Node()
    first.other, second.other = second, first
    del first, second
    gc.collect(0)
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
