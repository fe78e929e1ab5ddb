"""A load generator in a process of its own: `python -m tests.hammer URL [--connections N]`.

It keeps `connections` closed-loop clients requesting URL until SIGTERM, then prints how
many answers it got and exits 0. Tests use it to saturate a gateway's CPU from outside their
own event loop (which also runs the fault proxies being measured).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import aiohttp


async def hammer(url: str, connections: int) -> int:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    answered = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal answered
        while not stop.is_set():
            async with session.get(url) as response:
                await response.read()
            answered += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.ensure_future(client(session)) for _ in range(connections)]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return answered


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    print(asyncio.run(hammer(args.url, args.connections)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
