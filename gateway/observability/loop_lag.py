"""The event loop's own health: how late a timer fires is how long something blocked the loop.

A task asks to wake every `interval` seconds and records how much later than asked it ran.
Every request handled by this process waited at least that long, so a lag well above a
millisecond means a callback is doing blocking or CPU-bound work on the loop: move it to a
legacy (threads) or compute (processes) backend. Lags above `warn_after` are logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry, Histogram

log = logging.getLogger("gateway.loop_lag")

LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


def lag_histogram(registry: CollectorRegistry) -> Histogram:
    """The `gateway_event_loop_lag_seconds` histogram, in the app's registry."""
    return Histogram(
        "gateway_event_loop_lag_seconds",
        "How much later than scheduled the loop ran a timer: time it was blocked.",
        buckets=LAG_BUCKETS,
        registry=registry,
    )


async def measure_lag(observe: Callable[[float], None], interval: float, warn_after: float) -> None:
    """Run until cancelled, passing each measured lag (seconds) to `observe`."""
    while True:
        # perf_counter, not loop.time(): uvloop's clock has millisecond resolution
        expected = time.perf_counter() + interval
        await asyncio.sleep(interval)
        lag = max(0.0, time.perf_counter() - expected)
        observe(lag)
        if lag > warn_after:
            log.warning(
                "event loop blocked for %.0f ms (threshold %.0f ms): blocking or CPU-bound "
                "work is running on the loop",
                lag * 1000,
                warn_after * 1000,
            )


@asynccontextmanager
async def monitoring_lag(
    observe: Callable[[float], None], interval: float, warn_after: float
) -> AsyncIterator[None]:
    """Measure the loop's lag while the block runs (the app's lifespan)."""
    task = asyncio.create_task(measure_lag(observe, interval, warn_after), name="loop-lag")
    try:
        yield
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            # ours, unless the lifespan itself is being cancelled: then let that propagate
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
