"""A load generator in a process of its own: `python -m tests.hammer URL... [--connections N]`.

It keeps `connections` closed-loop clients requesting the URLs (in turn) until SIGTERM, then
prints one JSON line: answers by status, and the p50/p99/max latency in ms. Tests use it to
saturate a gateway's CPU from outside their own event loop (which also runs the fault
proxies being measured); benchmarks/hostile.py uses one connection of it as the normal
client beside each attack (`--pause` between its requests).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections import Counter

import aiohttp
import orjson


async def hammer(urls: list[str], connections: int, pause: float) -> dict[str, object]:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    statuses: Counter[str] = Counter()
    latencies: list[float] = []

    async def client(session: aiohttp.ClientSession, offset: int) -> None:
        n = offset
        while not stop.is_set():
            started = time.perf_counter()
            try:
                async with session.get(urls[n % len(urls)]) as response:
                    await response.read()
                    statuses[str(response.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - started)
            n += 1
            if pause:
                await asyncio.sleep(pause)  # the client's pace, not a synchronisation

    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.ensure_future(client(session, c)) for c in range(connections)]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    ordered = sorted(latencies) or [0.0]
    return {
        "statuses": dict(statuses),
        "answered": len(latencies),
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between requests")
    args = parser.parse_args()
    result = asyncio.run(hammer(args.urls, args.connections, args.pause))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
