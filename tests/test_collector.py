"""The server's cycle-collector pace (gateway/server/collector.py)."""

from __future__ import annotations

import gc

from gateway.server.collector import YOUNG_THRESHOLD, pace_collector


def test_the_young_generation_is_collected_less_often_and_the_older_as_before() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 11, 12)
        pace_collector()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 11, 12)
        assert YOUNG_THRESHOLD > 700
    finally:
        gc.set_threshold(*before)
