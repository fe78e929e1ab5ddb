"""Observability benchmark: what tracing and the access log cost, measured side by side.

    python -m benchmarks.observability [--seconds 24] [--clients 32]

Four gateways on the same routes (a 3-call fan-out, `needs` chain included, against the
catalog service with a 5 ms delay): one plain, one tracing (OTEL_TRACES_SAMPLER=always_on,
every span exported over OTLP/HTTP to the receiver of tests/otlp_receiver.py, running in a
process of its own: in this one, its protobuf decoding took the GIL from the load, and the
tracing gateway got 0.71-0.89x the requests/s of the others), one sampling 10% of the
traces (parentbased_traceidratio, 0.1), one with GATEWAY_ACCESS_LOG=1 (stdout to a file).
Rounds alternate between
them, so drift in the machine's load hits all of them alike, and each figure is the gateway
process's own CPU time per request (user + system, psutil) and its requests/s.

With two cores or more, each gateway (every thread of it, the span export's included) is
pinned to core 1 and everything else (the catalog, the receiver, this load generator) to
core 0, as benchmarks/compare.py pins its systems: unpinned, a gateway shared its core with
whatever the scheduler put beside it, and its CPU per request moved with that (seven draws
of the tracing ratio: 1.109-1.222x). `--no-pin` measures unpinned.

Targets: tracing on / off <= 1.15x CPU per request; access log on / off <= 1.05x.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

from benchmarks.core import latencies
from tests.processes import Running, start_gateway, start_service

CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}", timeout: 5s, max_connections: 512}}
endpoints:
  - path: /three/{{id}}
    calls:
      - {{name: product, backend: catalog, path: "/products/{{id}}", query: {{delay: 5ms}},
          group: product}}
      - {{name: author, backend: catalog, path: "/authors/{{calls.product.author_id}}",
          query: {{delay: 5ms}}, needs: [product], group: author}}
      - {{name: other, backend: catalog, path: /products/2, query: {{delay: 5ms}},
          group: other}}
"""


@dataclass
class Variant:
    name: str
    gateway: Running
    requests: int = 0
    cpu: float = 0.0
    seconds: float = 0.0

    @property
    def cpu_per_request(self) -> float:
        return self.cpu / self.requests

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


async def paced(session: aiohttp.ClientSession, url: str, rate: float, seconds: float) -> int:
    """Open-loop load: a request every 1/`rate` s for `seconds`, whether or not the ones
    before have answered; the number answered."""
    answered = 0

    async def one() -> None:
        nonlocal answered
        async with session.get(url) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"{url} answered {response.status}")
        answered += 1

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        wait = start + i / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)  # the pace of the load, not a synchronisation
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return answered


async def measure(variant: Variant, clients: int, seconds: float, rate: float = 0.0) -> None:
    """One round: warm the connections, then `seconds` of load, CPU counted: closed-loop
    `clients`, or `rate` requests/s when given."""
    process = psutil.Process(variant.gateway.process.pid)
    url = f"{variant.gateway.url}/three/1"
    connector = aiohttp.TCPConnector(limit=max(clients, 256) if rate else clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await latencies(session, url, clients, 0.3)
        before = sum(process.cpu_times()[:2])
        if rate:
            variant.requests += await paced(session, url, rate, seconds)
        else:
            variant.requests += len(await latencies(session, url, clients, seconds))
        variant.cpu += sum(process.cpu_times()[:2]) - before
    variant.seconds += seconds


GATEWAY_CPU, OTHERS_CPU = 1, 0


def pin(pid: int, cpu: int) -> None:
    """Every thread of process `pid` on core `cpu` (threads it starts later inherit it)."""
    for thread in psutil.Process(pid).threads():
        os.sched_setaffinity(thread.id, {cpu})


@contextmanager
def receiver_process(pinned: bool = False) -> Iterator[tuple[str, list[int]]]:
    """tests/otlp_receiver.py in a child process (on `OTHERS_CPU` when `pinned`): its
    endpoint, and (filled at exit) the number of spans it received."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.otlp_receiver"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    received: list[int] = []
    try:
        endpoint = child.stdout.readline().strip()
        if pinned:
            pin(child.pid, OTHERS_CPU)
        yield endpoint, received
    finally:
        child.stdin.close()
        received.append(int(child.stdout.readline() or 0))
        child.wait(timeout=30)


async def run_rounds(
    variants: list[Variant], clients: int, seconds: float, rounds: int, rate: float = 0.0
) -> None:
    for _ in range(rounds):
        for variant in variants:
            await measure(variant, clients, seconds / rounds, rate)


def report(variants: list[Variant], heading: str, spans: int | str, lines: int | str) -> None:
    plain = variants[0]
    cpu = {v.name: v.cpu_per_request / plain.cpu_per_request for v in variants}
    rate = {v.name: v.rate / plain.rate for v in variants}
    print(heading)
    for variant in variants:
        print(
            f"  {variant.name:<11} {variant.rate:7.0f} req/s  "
            f"{variant.cpu_per_request * 1e6:6.0f} us CPU per request"
        )
    print(
        f"tracing on / off     CPU per request {cpu['tracing']:.3f}x   (target <= 1.15)"
        f"   req/s {rate['tracing']:.3f}x   spans received: {spans}"
    )
    print(
        f"tracing 10% / off    CPU per request {cpu['tracing 10%']:.3f}x"
        f"   req/s {rate['tracing 10%']:.3f}x"
    )
    print(
        f"access log on / off  CPU per request {cpu['access log']:.3f}x   (target <= 1.05)"
        f"   req/s {rate['access log']:.3f}x   lines written: {lines}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=24.0, help="measuring time per variant")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds")
    parser.add_argument(
        "--no-pin", action="store_true", help="leave every process where the scheduler puts it"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=300.0,
        help="then the same at this many requests/s offered to each (0: skip)",
    )
    parser.add_argument(
        "--paced-seconds", type=float, default=12.0, help="measuring time per variant, paced"
    )
    args = parser.parse_args(argv)
    pinned = not args.no_pin and len(os.sched_getaffinity(0)) >= 2

    catalog = start_service("catalog")
    quiet = {"GATEWAY_LOG_LEVEL": "warning"}
    with tempfile.TemporaryDirectory() as tmp, receiver_process(pinned) as (endpoint, received):
        config = Path(tmp) / "bench.yaml"
        config.write_text(CONFIG.format(catalog=catalog.url))
        access_out = (Path(tmp) / "access.log").open("wb")
        variants = [
            Variant("plain", start_gateway(config, env=quiet)),
            Variant(
                "tracing",
                start_gateway(
                    config,
                    env={
                        **quiet,
                        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                        "OTEL_TRACES_SAMPLER": "always_on",
                    },
                ),
            ),
            Variant(
                "tracing 10%",
                start_gateway(
                    config,
                    env={
                        **quiet,
                        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                        "OTEL_TRACES_SAMPLER_ARG": "0.1",
                    },
                ),
            ),
            Variant(
                "access log",
                start_gateway(config, env={**quiet, "GATEWAY_ACCESS_LOG": "1"}, stdout=access_out),
            ),
        ]
        if pinned:
            for variant in variants:
                pin(variant.gateway.process.pid, GATEWAY_CPU)
            pin(catalog.process.pid, OTHERS_CPU)
            os.sched_setaffinity(0, {OTHERS_CPU})
        paced_variants = [Variant(v.name, v.gateway) for v in variants]
        try:
            asyncio.run(run_rounds(variants, args.clients, args.seconds, args.rounds))
            if args.rate:
                asyncio.run(
                    run_rounds(
                        paced_variants, args.clients, args.paced_seconds, args.rounds, args.rate
                    )
                )
        finally:
            for variant in variants:
                variant.gateway.stop()
            catalog.stop()
            access_out.close()
            lines = sum(1 for _ in (Path(tmp) / "access.log").open("rb"))
    placed = "each gateway pinned to core 1, the rest to core 0" if pinned else "unpinned"
    report(
        variants,
        f"3-call fan-out, {args.clients} clients (closed loop), 5 ms backend delay, "
        f"{args.rounds} rounds, {placed}",
        "" if args.rate else received[0],
        "" if args.rate else lines,
    )
    if args.rate:
        report(
            paced_variants,
            f"the same, {args.rate:g} requests/s offered to each (open loop)",
            f"{received[0]} (both parts)",
            f"{lines} (both parts)",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
