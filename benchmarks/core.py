"""Gateway core benchmark: fan-out cost and passthrough overhead, measured side by side.

    python -m benchmarks.core [--seconds 5] [--clients 10]

(1) p50 latency of a 3-call endpoint divided by the p50 of a 1-call endpoint, both against the
    same backend with a 20 ms delay, 10 concurrent clients (target <= 1.05: the calls run
    concurrently, so three cost about one).
(2) requests/s through a one-worker gateway passthrough divided by requests/s calling the
    backend directly, with the same load generator and concurrency; and the gateway's own
    CPU time per passthrough request (on 2 shared cores the ratio mostly says how the load
    generator, the backend and the gateway share them).
(3) p50 latency of a POST endpoint taking a 2 KiB JSON body and fanning out to 3 POST calls
    (one `body: forward`, two JSON body templates reading `{body...}`) divided by the p50
    of the GET 3-call endpoint, alternated in the same run (target <= 1.10: reading,
    parsing and re-encoding the body costs little next to the calls).

Processes: one catalog service, one gateway worker, and the load generator in this process,
all on 127.0.0.1 ephemeral ports; every process is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

from tests.processes import Running, start_gateway, start_service

CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}", timeout: 5s, max_connections: 512}}
endpoints:
  - path: /one
    calls:
      - {{name: a, backend: catalog, path: /products/1, query: {{delay: 20ms}}}}
  - path: /three
    calls:
      - {{name: a, backend: catalog, path: /products/1, query: {{delay: 20ms}}, group: a}}
      - {{name: b, backend: catalog, path: /products/2, query: {{delay: 20ms}}, group: b}}
      - {{name: c, backend: catalog, path: /products/3, query: {{delay: 20ms}}, group: c}}
  - path: /pass/{{rest:path}}
    proxy: {{backend: catalog, path: "/{{rest}}"}}
  - path: /write
    method: POST
    calls:
      - name: a
        backend: catalog
        method: POST
        path: /upload
        query: {{delay: 20ms}}
        body: forward
        group: a
      - name: b
        backend: catalog
        method: POST
        path: /upload
        query: {{delay: 20ms}}
        body: {{order: "{{body.id}}", lines: "{{body.items}}"}}
        group: b
      - name: c
        backend: catalog
        method: POST
        path: /upload
        query: {{delay: 20ms}}
        body:
          customer: "{{body.customer.name}}"
          total: "{{body.total}}"
          note: "order {{body.id}}"
        group: c
"""


def order_body(size: int = 2048) -> bytes:
    """A JSON order of just over `size` bytes: a customer, a total and enough item lines."""
    order: dict[str, object] = {"id": 1, "customer": {"name": "Ada Lovelace"}, "total": 12.5}
    items: list[dict[str, object]] = []
    while len(json.dumps({**order, "items": items})) < size:
        items.append({"sku": len(items) + 1, "quantity": 2, "note": "gift wrap, blue ribbon"})
    return json.dumps({**order, "items": items}).encode()


async def latencies(
    session: aiohttp.ClientSession,
    url: str,
    clients: int,
    seconds: float,
    body: bytes | None = None,
) -> list[float]:
    """Closed-loop clients hitting `url` for `seconds` (a POST of `body` when given); every
    latency in seconds."""
    samples: list[float] = []
    stop_at = time.perf_counter() + seconds
    headers = {"Content-Type": "application/json"}

    async def client() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            request = (
                session.get(url) if body is None else session.post(url, data=body, headers=headers)
            )
            async with request as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url} answered {response.status}")
            samples.append(time.perf_counter() - started)

    await asyncio.gather(*(client() for _ in range(clients)))
    return samples


async def fan_out_ratio(gateway: Running, clients: int, seconds: float) -> tuple[float, float]:
    """Alternate rounds of /one and /three so drift in machine load hits both alike."""
    one: list[float] = []
    three: list[float] = []
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await latencies(session, f"{gateway.url}/three", clients, 1.0)  # warm-up
        for _ in range(4):
            one += await latencies(session, f"{gateway.url}/one", clients, seconds / 4)
            three += await latencies(session, f"{gateway.url}/three", clients, seconds / 4)
    return statistics.median(one), statistics.median(three)


async def write_ratio(gateway: Running, clients: int, seconds: float) -> tuple[float, float]:
    """Alternate rounds of GET /three and POST /write (a 2 KiB body) in the same run."""
    reads: list[float] = []
    writes: list[float] = []
    body = order_body()
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await latencies(session, f"{gateway.url}/write", clients, 1.0, body)  # warm-up
        for _ in range(4):
            reads += await latencies(session, f"{gateway.url}/three", clients, seconds / 4)
            writes += await latencies(session, f"{gateway.url}/write", clients, seconds / 4, body)
    return statistics.median(reads), statistics.median(writes)


async def throughput(url: str, clients: int, seconds: float) -> float:
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await latencies(session, url, clients, 0.5)  # warm-up: open the connections
        samples = await latencies(session, url, clients, seconds)
    return len(samples) / seconds


async def passthrough_ratio(
    gateway: Running, catalog: Running, clients: int, seconds: float
) -> tuple[float, float, float]:
    """Requests/s direct and through the gateway, and the gateway's CPU seconds per request.

    The CPU figure is the gateway's own cost, whatever the load generator and the backend
    (sharing the same cores) leave it: the part of the ratio the gateway can change.
    """
    direct: list[float] = []
    proxied: list[float] = []
    gateway_process = psutil.Process(gateway.process.pid)
    cpu = 0.0
    for _ in range(2):
        direct.append(await throughput(f"{catalog.url}/products/1", clients, seconds / 2))
        before = sum(gateway_process.cpu_times()[:2])
        proxied.append(await throughput(f"{gateway.url}/pass/products/1", clients, seconds / 2))
        cpu += sum(gateway_process.cpu_times()[:2]) - before
    # each throughput() also sends 0.5 s of warm-up requests at the same rate
    served = sum(rate * (seconds / 2 + 0.5) for rate in proxied)
    return statistics.mean(direct), statistics.mean(proxied), cpu / served


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per figure")
    parser.add_argument(
        "--clients", type=int, default=10, help="concurrent clients for the fan-out"
    )
    parser.add_argument(
        "--pass-clients", type=int, default=32, help="concurrent clients for passthrough"
    )
    args = parser.parse_args(argv)

    catalog = start_service("catalog")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.yaml"
        config.write_text(CONFIG.format(catalog=catalog.url))
        gateway = start_gateway(config, env={"GATEWAY_LOG_LEVEL": "warning"})
        try:
            one, three = asyncio.run(fan_out_ratio(gateway, args.clients, args.seconds))
            direct, proxied, cpu_per_request = asyncio.run(
                passthrough_ratio(gateway, catalog, args.pass_clients, args.seconds)
            )
            read, write = asyncio.run(write_ratio(gateway, args.clients, args.seconds))
        finally:
            gateway.stop()
            catalog.stop()
    print(f"fan-out  ({args.clients} clients, 20 ms backend delay)")
    print(f"  p50 one call     {one * 1000:7.1f} ms")
    print(f"  p50 three calls  {three * 1000:7.1f} ms")
    print(f"  ratio            {three / one:7.3f}   (target <= 1.05)")
    print(f"passthrough  ({args.pass_clients} clients, one gateway worker)")
    print(f"  direct to backend  {direct:8.0f} req/s")
    print(f"  through gateway    {proxied:8.0f} req/s")
    print(f"  ratio              {proxied / direct:8.3f}")
    print(f"  gateway CPU per request {cpu_per_request * 1e6:5.0f} us")
    print(f"write fan-out  ({args.clients} clients, {len(order_body())} B JSON body, 3 POST calls)")
    print(f"  p50 GET three calls   {read * 1000:7.1f} ms")
    print(f"  p50 POST three calls  {write * 1000:7.1f} ms   (one forward, two body templates)")
    print(f"  ratio                 {write / read:7.3f}   (target <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
