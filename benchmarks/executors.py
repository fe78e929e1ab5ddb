"""The seed's concurrency table, measured on this machine for the gateway's own workloads.

    .venv/bin/python -m benchmarks.executors

Blocking I/O (a legacy client call that blocks its thread for 50 ms), 200 calls in flight:
  - on the event loop itself (what must never happen),
  - on the loop's default executor (min(32, CPUs + 4) threads),
  - on a legacy backend's own pool (`threads: 200`), through the gateway's `legacy_call`.
CPU-bound work (`services.pricing.bundle_offer`, tens of ms of pure Python), 8 in flight:
  - in threads (GIL-bound), through `legacy_call`,
  - in the compute process pool, through the gateway's `compute_call`.
For each: calls/s and the event loop's lag (p50/p99/max) measured by gateway/loop_lag.py
while the calls run. All rows come from one run; compare them with each other, not across
machines. Runs on uvloop, as the gateway does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from gateway.backends.compute import ProcessPool, compute_call
from gateway.backends.legacy import ThreadPool, legacy_call
from gateway.observability.loop_lag import measure_lag
from gateway.types import BackendRequest
from services.pricing import bundle_offer

BLOCKING_SECONDS = 0.05
IO_IN_FLIGHT = 200
IO_CALLS = 8000
CPU_IN_FLIGHT = 8
CPU_CALLS = 64
LAG_INTERVAL = 0.005


def blocking_io() -> dict[str, bool]:
    time.sleep(BLOCKING_SECONDS)  # a legacy client waiting on its socket
    return {"ok": True}


async def measure(
    calls: int, in_flight: int, one: Callable[[int], Awaitable[Any]]
) -> tuple[float, list[float]]:
    """Run `calls` calls, `in_flight` at a time -> (calls/s, loop lags in seconds)."""
    lags: list[float] = []
    monitor = asyncio.create_task(measure_lag(lags.append, LAG_INTERVAL, warn_after=3600))
    slots = asyncio.Semaphore(in_flight)

    async def bounded(n: int) -> None:
        async with slots:
            await one(n)

    started = time.perf_counter()
    await asyncio.gather(*(bounded(n) for n in range(calls)))
    elapsed = time.perf_counter() - started
    monitor.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await monitor
    return calls / elapsed, lags or [0.0]


def row(name: str, rate: float, lags: list[float]) -> str:
    ordered = sorted(lags)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"| {name:<48} | {rate:>8.0f} | {statistics.median(ordered) * 1000:>8.1f} "
        f"| {p99 * 1000:>8.1f} | {ordered[-1] * 1000:>8.1f} |"
    )


async def main() -> None:
    loop = asyncio.get_running_loop()
    cpus = os.cpu_count() or 1
    request = BackendRequest(args={"id": "42"})
    rows = []

    async def on_loop(n: int) -> None:
        blocking_io()  # the anti-pattern, measured so the other rows have a reference

    rate, lags = await measure(20, IO_IN_FLIGHT, on_loop)
    rows.append(row("50 ms blocking I/O on the event loop itself", rate, lags))

    async def default_executor(n: int) -> None:
        await loop.run_in_executor(None, blocking_io)

    default_threads = min(32, cpus + 4)
    rate, lags = await measure(IO_CALLS // 16, IO_IN_FLIGHT, default_executor)
    rows.append(row(f"50 ms blocking I/O, default executor ({default_threads} thr)", rate, lags))

    threads = ThreadPool("bench", threads=IO_IN_FLIGHT, queue=0, retry_after=1)
    await threads.prestart()  # as the gateway does at start-up
    io_call = legacy_call("bench", threads, lambda method, args: blocking_io())
    rate, lags = await measure(IO_CALLS, IO_IN_FLIGHT, lambda n: io_call(request))
    rows.append(row(f"50 ms blocking I/O, legacy pool (threads: {IO_IN_FLIGHT})", rate, lags))
    threads.executor.shutdown(wait=True)

    cpu_threads = ThreadPool("cpu", threads=CPU_IN_FLIGHT, queue=0, retry_after=1)
    cpu_call = legacy_call("cpu", cpu_threads, lambda method, args: bundle_offer(**args))
    rate, lags = await measure(CPU_CALLS, CPU_IN_FLIGHT, lambda n: cpu_call(request))
    rows.append(row(f"CPU-bound bundle_offer, threads ({CPU_IN_FLIGHT} thr)", rate, lags))
    cpu_threads.executor.shutdown(wait=True)

    processes = ProcessPool(workers=cpus, queue=CPU_IN_FLIGHT, retry_after=1)
    await processes.warm(("services.pricing:bundle_offer",))
    compute = compute_call("services.pricing:bundle_offer", processes)
    rate, lags = await measure(CPU_CALLS, CPU_IN_FLIGHT, lambda n: compute(request))
    rows.append(row(f"CPU-bound bundle_offer, process pool ({cpus} procs)", rate, lags))
    await processes.aclose()

    print(
        f"{cpus} CPUs, Python {sys.version.split()[0]}, uvloop; "
        f"loop lag sampled every {LAG_INTERVAL * 1000:.0f} ms\n"
    )
    header = ("workload", "calls/s", "lag p50", "lag p99", "lag max")
    print(f"| {header[0]:<48} | " + " | ".join(f"{h:>8}" for h in header[1:]) + " |")
    print(f"|{'-' * 50}|" + "|".join("-" * 10 for _ in header[1:]) + "|")
    print("\n".join(rows))
    print("\n(lag in ms)")


if __name__ == "__main__":
    uvloop.run(main())
