"""Collections benchmark: what enriching every item of a 20-item page with `for_each` costs.

    python -m benchmarks.collections [--seconds 8] [--clients 2]

Three endpoints against the same catalog service, every backend answer delayed 20 ms:

* `/single`: one call (one round trip);
* `/dependent`: the 20-item page, then one call that needs it (two round trips in a row);
* `/enriched`: the 20-item page, then a `for_each` call per item (20 distinct requests,
  `concurrency: 20`) whose results go `into` each item: also two round trips in a row.

The headline ratio is p50(/enriched) / p50(/dependent): what 20 element calls cost next to
one (target <= 1.3: the elements run concurrently, so twenty cost about one). The second
ratio, p50(/enriched) / p50(/single), says the same against one call: about 2, the page and
then its elements, never 21. The gateway's CPU time per request of each says what one more
element call costs it. Rounds of the three alternate so drift in machine load hits all
alike. Two clients by default: each /enriched request is 21 backend requests, so 4 clients
already keep 80 requests at once on the one catalog process, and on 2 shared cores its CPU,
not the fan-out, then sets the latency.

Processes: one catalog service, one gateway worker, and the load generator in this process,
on 127.0.0.1 ephemeral ports; every process is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

import aiohttp
import psutil

from benchmarks.core import latencies
from tests.processes import start_gateway, start_service

PAGE = "{name: page, backend: catalog, path: /products, query: {limit: '20', delay: 20ms}, "
PAGE += "target: items, group: page}"
CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}", timeout: 5s, max_connections: 512}}
endpoints:
  - path: /single
    calls:
      - {{name: one, backend: catalog, path: /products/1, query: {{delay: 20ms}}}}
  - path: /dependent
    calls:
      - {page}
      - name: first
        backend: catalog
        path: "/products/{{calls.page.0.id}}"
        query: {{delay: 20ms}}
        needs: [page]
        group: first
  - path: /enriched
    calls:
      - {page}
      - name: detail
        backend: catalog
        path: "/products/{{item.id}}"
        query: {{delay: 20ms}}
        for_each: calls.page
        into: detail
        concurrency: 20
"""

PATHS = ("/single", "/dependent", "/enriched")


async def measure(
    base: str, gateway: psutil.Process, clients: int, seconds: float
) -> tuple[dict[str, float], dict[str, float]]:
    """p50 of each endpoint, and the gateway's CPU seconds per request of each, in seconds,
    over alternating rounds."""
    samples: dict[str, list[float]] = {path: [] for path in PATHS}
    cpu: dict[str, float] = dict.fromkeys(PATHS, 0.0)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"{base}/enriched") as response:  # the answer is what we expect
            body = await response.json()
            if len(body["page"]) != 20 or not all("detail" in item for item in body["page"]):
                raise RuntimeError(f"/enriched is not enriched: {body}")
        await latencies(session, f"{base}/enriched", clients, 1.0)  # warm-up
        for _ in range(4):
            for path in PATHS:
                before = sum(gateway.cpu_times()[:2])
                samples[path] += await latencies(session, base + path, clients, seconds / 12)
                cpu[path] += sum(gateway.cpu_times()[:2]) - before
    p50 = {path: statistics.median(values) for path, values in samples.items()}
    return p50, {path: cpu[path] / len(samples[path]) for path in PATHS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time in all")
    parser.add_argument("--clients", type=int, default=2, help="concurrent clients")
    args = parser.parse_args(argv)

    catalog = start_service("catalog")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.yaml"
        config.write_text(CONFIG.format(catalog=catalog.url, page=PAGE))
        gateway = start_gateway(config, env={"GATEWAY_LOG_LEVEL": "warning"})
        try:
            process = psutil.Process(gateway.process.pid)
            p50, cpu = asyncio.run(measure(gateway.url, process, args.clients, args.seconds))
        finally:
            gateway.stop()
            catalog.stop()
    single, dependent, enriched = (p50[path] for path in PATHS)
    print(f"for_each over a 20-item page  ({args.clients} clients, 20 ms backend delay)")
    print(f"  p50 one call                    {single * 1000:7.1f} ms")
    print(f"  p50 page + one dependent call   {dependent * 1000:7.1f} ms")
    print(f"  p50 page + 20 for_each calls    {enriched * 1000:7.1f} ms")
    print(f"  ratio for_each / dependent      {enriched / dependent:7.3f}   (target <= 1.3)")
    print(f"  ratio for_each / one call       {enriched / single:7.3f}   (two round trips: ~2)")
    extra = (cpu["/enriched"] - cpu["/dependent"]) / 19
    print(f"  gateway CPU per request: dependent {cpu['/dependent'] * 1e6:5.0f} us, ", end="")
    print(f"for_each {cpu['/enriched'] * 1e6:5.0f} us ({extra * 1e6:.0f} us per extra call)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
