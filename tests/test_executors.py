"""Pool admission and accounting, context propagation and loop-lag measurement, in-process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

import pytest

from gateway.backends.legacy import ThreadPool
from gateway.errors import Refused
from gateway.observability.loop_lag import measure_lag
from gateway.web.request_id import current_request_id


async def test_pool_admits_threads_plus_queue_and_refuses_the_rest_at_once() -> None:
    pool = ThreadPool("inv", threads=2, queue=1, retry_after=3)
    gate = threading.Event()
    try:
        calls = [asyncio.create_task(pool.run(lambda: gate.wait(30))) for _ in range(3)]
        await asyncio.sleep(0)  # let the three tasks submit (a scheduling step, not a wait)
        assert pool.stats.admitted == 3
        with pytest.raises(Refused) as refused:
            await pool.run(lambda: True)
        assert refused.value.retry_after == 3
        assert pool.stats.refused == 1
        gate.set()
        assert await asyncio.gather(*calls) == [True, True, True]
    finally:
        gate.set()
        pool.executor.shutdown(wait=True)
    assert (pool.stats.admitted, pool.stats.running) == (0, 0)


async def test_a_timed_out_call_keeps_its_thread_until_it_returns() -> None:
    pool = ThreadPool("inv", threads=1, queue=0, retry_after=1)
    entered, gate = threading.Event(), threading.Event()

    def blocking() -> str:
        entered.set()
        gate.wait(30)
        return "late"

    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await pool.run(blocking)
        assert time.monotonic() - started < 5  # answered without waiting for the thread
        assert entered.is_set()
        assert (pool.stats.busy, pool.stats.admitted) == (1, 1)
        with pytest.raises(Refused):  # the hung thread still holds the only slot
            await pool.run(lambda: "next")
        gate.set()
    finally:
        gate.set()
        await asyncio.to_thread(pool.executor.shutdown, wait=True)
    assert (pool.stats.busy, pool.stats.admitted) == (0, 0)
    assert "0/1 busy" in repr(pool)


async def test_a_queued_call_that_times_out_gives_its_slot_back_at_once() -> None:
    pool = ThreadPool("inv", threads=1, queue=1, retry_after=1)
    gate = threading.Event()
    try:
        running = asyncio.create_task(pool.run(lambda: gate.wait(30)))
        await asyncio.sleep(0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await pool.run(lambda: "never runs")
        assert pool.stats.admitted == 1  # the cancelled queued call left the queue
        gate.set()
        assert await running is True
    finally:
        gate.set()
        await asyncio.to_thread(pool.executor.shutdown, wait=True)


async def test_the_callers_context_is_visible_in_the_thread() -> None:
    pool = ThreadPool("inv", threads=1, queue=0, retry_after=1)
    try:
        current_request_id.set("req-42")
        seen = await pool.run(lambda: (current_request_id.get(), threading.current_thread().name))
    finally:
        pool.executor.shutdown(wait=True)
    assert seen[0] == "req-42"
    assert seen[1].startswith("legacy-inv")


def block_the_loop(seconds: float) -> None:
    """The blocking work under test: called from a coroutine, it stalls the loop on purpose."""
    time.sleep(seconds)


async def test_loop_lag_is_measured_and_a_long_block_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lags: list[float] = []
    long_lag = asyncio.Event()

    def observe(lag: float) -> None:
        lags.append(lag)
        if lag >= 0.15:
            long_lag.set()

    with caplog.at_level(logging.WARNING, logger="gateway.loop_lag"):
        monitor = asyncio.create_task(measure_lag(observe, interval=0.01, warn_after=0.1))
        try:
            await asyncio.sleep(0)  # the monitor schedules its first timer
            block_the_loop(0.2)
            async with asyncio.timeout(10):
                await long_lag.wait()
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
    assert max(lags) >= 0.15
    assert any("event loop blocked" in r.getMessage() for r in caplog.records)
