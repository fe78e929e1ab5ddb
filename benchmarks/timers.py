"""What bounding one await by a timeout costs, in-process under uvloop (no network).

    python -m benchmarks.timers [--count 100000] [--concurrency 256]

`asyncio.timeout` (a loop timer armed and cancelled per use) against `gateway.timers`'
`Timeouts` (a queue entry per use, one loop timer), each around an await that returns at
once, and the bare await for reference; `--concurrency` tasks do it at the same time, so
the heap holds what a busy gateway's does. Figures are CPU microseconds per use, the best
of 5 rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import uvloop

from gateway.timers import Timeouts


async def _answer() -> int:
    await asyncio.sleep(0)
    return 1


async def bare() -> int:
    return await _answer()


async def with_asyncio_timeout() -> int:
    async with asyncio.timeout(5):
        return await _answer()


_TIMEOUTS = Timeouts()


async def with_timeouts() -> int:
    with _TIMEOUTS.within(5):  # as the policies use it
        return await _answer()


async def measure(use: Callable[[], Awaitable[int]], count: int, concurrency: int) -> float:
    async def worker(n: int) -> None:
        for _ in range(n):
            await use()

    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
        best = min(best, time.process_time() - started)
    return best * 1e6 / (count // concurrency * concurrency)


async def main(count: int, concurrency: int) -> None:
    base = await measure(bare, count, concurrency)
    print(f"bare await                      {base:6.2f} us")
    for name, use in (("asyncio.timeout", with_asyncio_timeout), ("Timeouts", with_timeouts)):
        figure = await measure(use, count, concurrency)
        print(f"{name:<22} {figure:6.2f} us  (+{figure - base:.2f} us per use)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    uvloop.run(main(args.count, args.concurrency))
