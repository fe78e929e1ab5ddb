"""When the memory task collects and trims (gateway/observability/memory.py's TrimPace)."""

from __future__ import annotations

import pytest

from gateway.observability.memory import SETTLED_BYTES, TrimPace

MIB = 1024 * 1024
GROWN = 16 * MIB


@pytest.mark.parametrize(
    ("sizes", "due"),
    [
        ([100 * MIB], [False]),  # no growth
        ([110 * MIB, 110 * MIB], [False, False]),  # grown, but less than `grown`
        ([110 * MIB, 120 * MIB, 120 * MIB], [False, False, True]),  # grew 20, then settled
        # ramping up (10,000 connections arriving): never while it grows, once it stopped
        ([110 * MIB, 130 * MIB, 150 * MIB, 170 * MIB, 170 * MIB], [False] * 4 + [True]),
        ([130 * MIB, 130 * MIB + SETTLED_BYTES - 1], [False, True]),  # less than settled
        ([130 * MIB, 130 * MIB + SETTLED_BYTES], [False, False]),  # still growing
        # shrank first: growth counts from the lowest size seen
        ([90 * MIB, 100 * MIB, 100 * MIB], [False, False, False]),
        ([90 * MIB, 107 * MIB, 107 * MIB], [False, False, True]),
    ],
)
def test_a_trim_is_due_after_the_growth_stopped(sizes: list[int], due: list[bool]) -> None:
    pace = TrimPace(100 * MIB, GROWN)
    assert [pace.due(size) for size in sizes] == due


def test_after_a_trim_growth_counts_from_the_size_it_left() -> None:
    pace = TrimPace(100 * MIB, GROWN)
    assert [pace.due(s) for s in (130 * MIB, 130 * MIB)] == [False, True]
    pace.trimmed(125 * MIB)
    assert pace.due(125 * MIB) is False, "the same size again is not growth"
    assert pace.due(140 * MIB) is False, "growing"
    assert pace.due(140 * MIB) is False, "settled, but 15 MiB over 125"
    assert pace.due(142 * MIB) is False, "growing again"
    assert pace.due(142 * MIB) is True, "settled 17 MiB over 125"
