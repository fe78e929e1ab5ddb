"""Call cache benchmark: the demo's product page with its catalog calls cached, against the
same page uncached, side by side in one run.

    python -m benchmarks.cache [--seconds 8] [--clients 16] [--baseline DIR]

The page is examples/demo.yaml's /api/products/{id}: the product and its author from the
catalog (the author needs the product), and its reviews. Two gateways serve it from the same
catalog and reviews services; one has `cache: {ttl: 30s}` on the catalog backend. Closed-loop
clients fetch the pages of 20 products, alternating rounds between the two gateways so drift
in machine load hits both alike. Targets: req/s cached / uncached >= 2, p50 <= 0.6.
Every process is started here on 127.0.0.1 ephemeral ports and stopped by PID.

`--baseline DIR` adds the same two gateways run from another checkout (say, main's:
`git archive main | tar -x -C DIR`), in the same alternation: before/after side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

from tests.processes import REPO, Running, start_gateway, start_service

PAGE = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}", timeout: 2s, max_connections: 200{cache}}}
  reviews: {{kind: http, url: "{reviews}", timeout: 2s, max_connections: 200}}
endpoints:
  - path: /api/products/{{id}}
    timeout: 2s
    calls:
      - name: product
        backend: catalog
        path: /products/{{id}}
        allow: [id, name, price_cents, author_id, tags, dimensions.width_mm]
        rename: {{price_cents: price}}
        required: true
      - name: author
        backend: catalog
        path: /authors/{{calls.product.author_id}}
        needs: [product]
        allow: [name, country]
        group: author
      - name: reviews
        backend: reviews
        path: /reviews
        query: {{product: "{{id}}"}}
        allow: [average, reviews.rating, reviews.text]
        group: reviews
"""


async def round_of(
    session: aiohttp.ClientSession, base: str, clients: int, seconds: float
) -> list[float]:
    samples: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        i = offset
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            async with session.get(f"{base}/api/products/{1 + i % 20}") as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{base} answered {response.status}")
            samples.append(time.perf_counter() - started)
            i += 1

    await asyncio.gather(*(client(c) for c in range(clients)))
    return samples


def cpu_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    return {name: sum(process.cpu_times()[:2]) for name, process in processes.items()}


async def compare(
    gateways: dict[str, Running], services: list[Running], clients: int, seconds: float
) -> tuple[dict[str, list[float]], dict[str, dict[str, float]]]:
    """Latencies of each gateway, and the CPU seconds each process spent during its rounds
    (`gateway`, the services, `load`: this process)."""
    results: dict[str, list[float]] = {name: [] for name in gateways}
    cpu: dict[str, dict[str, float]] = {name: {} for name in gateways}
    others = {s.name: psutil.Process(s.process.pid) for s in services}
    others["load"] = psutil.Process()
    connector = aiohttp.TCPConnector(limit=2 * clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        for gateway in gateways.values():
            await round_of(session, gateway.url, clients, 1.0)  # warm-up (fills the cache)
        for _ in range(4):
            for name, gateway in gateways.items():
                processes = {"gateway": psutil.Process(gateway.process.pid), **others}
                before = cpu_seconds(processes)
                results[name] += await round_of(session, gateway.url, clients, seconds / 4)
                after = cpu_seconds(processes)
                for process, spent in after.items():
                    cpu[name][process] = cpu[name].get(process, 0.0) + spent - before[process]
    return results, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per gateway")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout to run")
    args = parser.parse_args(argv)
    trees = {"": REPO, **({"baseline ": args.baseline.resolve()} if args.baseline else {})}
    catalog, reviews = start_service("catalog"), start_service("reviews")
    gateways: dict[str, Running] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for tree, cwd in trees.items():
                for name, cache in (("cached", ", cache: {ttl: 30s}"), ("uncached", "")):
                    path = Path(tmp) / f"{name}.yaml"
                    path.write_text(
                        PAGE.format(catalog=catalog.url, reviews=reviews.url, cache=cache)
                    )
                    gateways[tree + name] = start_gateway(
                        path, env={"GATEWAY_LOG_LEVEL": "warning"}, cwd=cwd
                    )
            results, cpu = asyncio.run(
                compare(gateways, [catalog, reviews], args.clients, args.seconds)
            )
    finally:
        for process in (*gateways.values(), catalog, reviews):
            process.stop()
    rate = {name: len(samples) / args.seconds for name, samples in results.items()}
    p50 = {name: statistics.median(samples) for name, samples in results.items()}
    print(f"demo product page, {args.clients} clients, 20 products, {args.seconds:g} s per gateway")
    for name in gateways:
        print(f"  {name:18s} {rate[name]:8.0f} req/s   p50 {p50[name] * 1000:6.2f} ms")
        pages = len(results[name])
        spent = "  ".join(f"{p} {s / pages * 1e6:4.0f}" for p, s in cpu[name].items())
        print(f"                     CPU us per page: {spent}")
    for tree in trees:
        cached, uncached = tree + "cached", tree + "uncached"
        print(f"  {tree}req/s ratio   {rate[cached] / rate[uncached]:6.2f}   (target >= 2)")
        print(f"  {tree}p50 ratio     {p50[cached] / p50[uncached]:6.2f}   (target <= 0.6)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
