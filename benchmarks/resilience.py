"""Resilience benchmark: the figures of docs/resilience.md, measured side by side in one run.

    python -m benchmarks.resilience [--seconds 4] [--clients 40]

(1) retries: upstream requests / client requests for an always-503 backend, over a run of
    closed-loop clients: no retries (the reference), retries within the 20% budget, retries
    with no budget; for a backend that fails at once and one that fails after 200 ms, and
    for the first again with the gateway's CPU saturated by another client (tests/hammer.py).
(2) hedging: p50/p99/max of an endpoint whose backend answers every 20th request 1 s late,
    without and with `hedge: {after: 100ms}` (rounds alternate so machine noise hits both).
(3) coalescing: upstream requests for 100 identical concurrent GETs (backend: 200 ms).
(4) black hole: 200 calls at once to a black-holed backend (timeout 1 s, endpoint deadline
    10 s), without and with a bulkhead of 20: how many reach it, when they fail, how fast a
    refusal is, and the latency of another endpoint before and meanwhile.
(5) breaker: a backend killed with SIGKILL under load: time until the breaker is open;
    restarted: time from its first answer until the endpoint is complete again (cooldown 5 s).

Processes: catalog and reviews services, one gateway worker, and, in this process, the load
generator and the fault-injecting proxies (tests/faultproxy.py) between the gateway and its
backends; all on 127.0.0.1, every process stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.faultproxy import FaultProxy, fault_proxy
from tests.processes import REPO, Running, start_gateway, start_service

RETRY = "attempts: 3, backoff: 50ms, max_backoff: 1s, on: [connect, timeout, 502, 503, 504]"
BUDGET = "{" + RETRY + ", budget: 20%}"  # as the issue writes it (min_retries: 3, the default)
NO_BUDGET = "{" + RETRY + ", budget: 100%, min_retries: 100000}"  # every failure retried
FAILING_QUERY = '{product: "{id}", status: "503", delay: "{query.delay}"}'  # always 503
CONFIG = """
version: 1
backends:
  plain503: {{kind: http, url: "{failing}"}}
  budget503: {{kind: http, url: "{failing}", retry: {budget}}}
  nobudget503: {{kind: http, url: "{failing}", retry: {no_budget}}}
  tail: {{kind: http, url: "{tail}", timeout: 5s}}
  hedged: {{kind: http, url: "{tail}", timeout: 5s, hedge: {{after: 100ms, max: 1}}}}
  shared: {{kind: http, url: "{slow}"}}
  coalesced: {{kind: http, url: "{slow}", coalesce: true}}
  catalog: {{kind: http, url: "{catalog}"}}
  hole: {{kind: http, url: "{hole}", timeout: 1s, concurrency: 20}}
  open_hole: {{kind: http, url: "{hole}", timeout: 1s}}
  reviews:
    kind: http
    url: "{reviews}"
    breaker: {{failures: 5, window: 10s, cooldown: 5s}}
endpoints:
  - path: "/503/{{id}}"
    calls:
      - {{backend: plain503, path: /reviews, query: {failing_query}}}
  - path: "/503b/{{id}}"
    calls:
      - {{backend: budget503, path: /reviews, query: {failing_query}}}
  - path: "/503n/{{id}}"
    calls:
      - {{backend: nobudget503, path: /reviews, query: {failing_query}}}
  - {{path: "/tail/{{id}}", calls: [{{backend: tail, path: "/products/{{id}}"}}]}}
  - {{path: "/hedged/{{id}}", calls: [{{backend: hedged, path: "/products/{{id}}"}}]}}
  - {{path: /shared, calls: [{{backend: shared, path: /products/7, query: {{delay: 200ms}}}}]}}
  - path: /coalesced
    calls: [{{backend: coalesced, path: /products/7, query: {{delay: 200ms}}}}]
  - {{path: "/ok/{{id}}", calls: [{{backend: catalog, path: "/products/{{id}}"}}]}}
  - {{path: "/hole/{{id}}", timeout: 10s, calls: [{{backend: hole, path: "/products/{{id}}"}}]}}
  - path: "/open_hole/{{id}}"
    timeout: 10s
    calls: [{{backend: open_hole, path: "/products/{{id}}"}}]
  - path: "/page/{{id}}"
    calls:
      - {{name: product, backend: catalog, path: "/products/{{id}}", required: true}}
      - name: reviews
        backend: reviews
        path: /reviews
        query: {{product: "{{id}}"}}
        group: reviews
"""


@dataclass
class Bench:
    session: aiohttp.ClientSession
    gateway: str

    async def wait_ready(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                async with self.session.get(f"{self.gateway}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            await asyncio.sleep(0.05)  # polling readiness: the app is still starting

    async def get(self, path: str, **params: str) -> tuple[int, float, dict[str, str]]:
        started = time.perf_counter()
        async with self.session.get(f"{self.gateway}{path}", params=params) as response:
            await response.read()
            headers = {name.lower(): value for name, value in response.headers.items()}
            return response.status, time.perf_counter() - started, headers

    async def metric(self, name: str, **labels: str) -> float:
        async with self.session.get(f"{self.gateway}/metrics") as response:
            text = await response.text()
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and labels.items() <= s.labels.items()
        )

    async def closed_loop(
        self, path: Callable[[int], str], clients: int, seconds: float, **params: str
    ) -> list[float]:
        """`clients` loops for `seconds`; every latency."""
        samples: list[float] = []
        stop_at = time.monotonic() + seconds

        async def client(offset: int) -> None:
            n = offset
            while time.monotonic() < stop_at:
                samples.append((await self.get(path(n), **params))[1])
                n += 1

        await asyncio.gather(*(client(c * 1000) for c in range(clients)))
        return samples


def progress(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def retry_ratio(
    bench: Bench, proxy: FaultProxy, path: str, clients: int, seconds: float, delay: str
) -> float:
    """Upstream requests / client requests over a whole run of closed-loop clients.

    The clients stop after their current call, so every upstream request of the run belongs
    to a counted client request: no window edges (a window would cut through retries).
    """
    sent = 0
    stop_at = time.monotonic() + seconds

    async def client(offset: int) -> None:
        nonlocal sent
        n = offset
        while time.monotonic() < stop_at:
            sent += 1
            await bench.get(path.format(id=1 + n % 100), delay=delay)
            n += 1

    upstream = proxy.requests
    await asyncio.gather(*(client(c * 7) for c in range(clients)))
    return (proxy.requests - upstream) / sent


async def retries(bench: Bench, failing: FaultProxy, clients: int, seconds: float) -> list[str]:
    lines = [f"retries: always-503 backend, {clients} clients, upstream / client requests"]
    lines.append(f"  {'503 after':>21} {'no retries':>11} {'budget 20%':>11} {'no budget':>10}")
    for delay, saturated in (("0ms", False), ("200ms", False), ("0ms", True)):
        # saturated: a load generator in a process of its own (256 connections) hammers
        # another endpoint of the gateway meanwhile, so its CPU is the bottleneck
        hammer = start_hammer(f"{bench.gateway}/ok/7") if saturated else None
        try:
            row = [
                await retry_ratio(bench, failing, path, clients, seconds, delay)
                for path in ("/503/{id}", "/503b/{id}", "/503n/{id}")
            ]
        finally:
            if hammer is not None:
                hammer.terminate()
                hammer.communicate(timeout=60)
        label = f"{delay}{', saturated' if saturated else ''}"
        lines.append(f"  {label:>21} {row[0]:11.3f} {row[1]:11.3f} {row[2]:10.3f}")
    return lines


def start_hammer(url: str) -> subprocess.Popen[bytes]:
    """tests/hammer.py on `url` in a process of its own; stop it by PID."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.hammer", url, "--connections", "256"],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )


async def hedging(bench: Bench, tail: FaultProxy, seconds: float) -> list[str]:
    tail.mode, tail.latency, tail.slow_every = "latency", 1.0, 20
    clients = 10
    plain: list[float] = []
    hedged: list[float] = []
    requests = tail.requests
    for _ in range(4):  # alternate, so drift in machine load hits both alike
        plain += await bench.closed_loop(lambda n: f"/tail/{1 + n % 100}", clients, seconds / 8)
        hedged += await bench.closed_loop(lambda n: f"/hedged/{1 + n % 100}", clients, seconds / 8)
    sent = await bench.metric("gateway_hedges_sent_total", backend="hedged")
    won = await bench.metric("gateway_hedges_won_total", backend="hedged")
    extra = sent / len(hedged)
    assert tail.requests - requests == len(plain) + len(hedged) + sent
    lines = [f"hedging: every 20th backend request 1 s late, {clients} clients (ms)"]
    lines.append(f"  {'':16} {'p50':>7} {'p99':>7} {'max':>7} {'requests':>9}")
    for name, samples in (("no hedge", plain), ("hedge 100ms", hedged)):
        p50, p99, top = (x * 1000 for x in (pct(samples, 0.5), pct(samples, 0.99), max(samples)))
        lines.append(f"  {name:16} {p50:7.1f} {p99:7.1f} {top:7.1f} {len(samples):9}")
    lines.append(
        f"  p99 ratio hedged/plain {pct(hedged, 0.99) / pct(plain, 0.99):.3f}; hedges sent "
        f"{sent:.0f} ({extra:.1%} extra requests), won {won:.0f}"
    )
    return lines


async def coalescing(bench: Bench, slow: FaultProxy) -> list[str]:
    lines = ["coalescing: 100 identical concurrent GETs, backend answers in 200 ms"]
    lines.append(f"  {'':16} {'upstream':>9} {'p50 ms':>7} {'max ms':>7}")
    for name, path in (("no coalescing", "/shared"), ("coalesce: true", "/coalesced")):
        before = slow.requests
        answers = await asyncio.gather(*(bench.get(path) for _ in range(100)))
        assert {status for status, _, _ in answers} == {200}
        latencies = [elapsed for _, elapsed, _ in answers]
        lines.append(
            f"  {name:16} {slow.requests - before:9} {statistics.median(latencies) * 1000:7.1f}"
            f" {max(latencies) * 1000:7.1f}"
        )
    return lines


async def black_hole(bench: Bench, hole: FaultProxy, seconds: float) -> list[str]:
    clients = 10
    lines = [
        "black hole: 200 calls at once; timeout 1 s, endpoint deadline 10 s",
        f"  {'':22} {'reached':>7} {'timed out':>9} {'after p50':>9} {'refused':>7}"
        f" {'in gateway':>10}   other endpoint p50/p99 ms",
    ]
    before = await bench.closed_loop(lambda n: f"/ok/{1 + n % 100}", clients, seconds / 2)
    lines.append(
        f"  {'(no black hole)':22} {'':>7} {'':>9} {'':>9} {'':>7} {'':>10}   "
        f"{pct(before, 0.5) * 1000:5.1f} / {pct(before, 0.99) * 1000:5.1f}"
    )
    for name, path in (("no bulkhead", "/open_hole"), ("bulkhead 20", "/hole")):
        reached = hole.requests
        holed = [asyncio.ensure_future(bench.get(f"{path}/{n}")) for n in range(200)]
        during = await bench.closed_loop(lambda n: f"/ok/{1 + n % 100}", clients, seconds / 2)
        answers = await asyncio.gather(*holed)
        timed_out = [elapsed for status, elapsed, _ in answers if status == 504]
        refused = [elapsed for status, elapsed, _ in answers if status == 503]
        assert len(timed_out) + len(refused) == 200, {status for status, _, _ in answers}
        # how long a refusal takes inside the gateway; the client's figure adds the cost of
        # 200 connections opened at once from one Python process
        labels = {"endpoint": f"{path}/{{id}}", "outcome": "BulkheadFull"}
        spent = await bench.metric("gateway_call_duration_seconds_sum", **labels)
        count = await bench.metric("gateway_call_duration_seconds_count", **labels)
        inside = f"{spent / count * 1000:7.2f} ms" if count else ""
        lines.append(
            f"  {name:22} {hole.requests - reached:7} {len(timed_out):9} "
            f"{statistics.median(timed_out):7.2f} s {len(refused):7} {inside:>10}   "
            f"{pct(during, 0.5) * 1000:5.1f} / {pct(during, 0.99) * 1000:5.1f}"
        )
    return lines


async def breaker(
    bench: Bench, proxy: FaultProxy, reviews: Running, started: list[Running]
) -> list[str]:
    """SIGKILL the backend behind `proxy` under load, then start another (into `started`)."""
    stop = asyncio.Event()
    complete: list[float] = []  # when each complete answer came

    async def client(offset: int) -> None:
        n = offset
        while not stop.is_set():
            status, _, headers = await bench.get(f"/page/{1 + n % 100}")
            assert status == 200, status  # partial while the backend is down, never failed
            if headers.get("x-gateway-complete") == "true":
                complete.append(time.monotonic())
            n += 1

    async def until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not happen within 30 s")
            await asyncio.sleep(0.005)

    tasks = [asyncio.ensure_future(client(c * 100)) for c in range(8)]
    try:
        await until(lambda: len(complete) >= 100, "steady load")
        killed_at = time.monotonic()
        reviews.kill()
        state = 0.0
        while state != 1:  # each /metrics read takes a few ms: that is the resolution
            state = await bench.metric("gateway_breaker_state", backend="reviews")
            if time.monotonic() - killed_at > 30:
                raise RuntimeError("the breaker never opened")
        opened = time.monotonic() - killed_at
        await asyncio.sleep(1.0)  # down for a while under load
        restarted = start_service("reviews")
        started.append(restarted)
        proxy.upstream_port = restarted.port
        async with bench.session.get(f"{restarted.url}/reviews", params={"product": "1"}) as r:
            assert r.status == 200
        serving_at = time.monotonic()
        await until(lambda: bool(complete) and complete[-1] >= serving_at, "recovery")
        recovered = next(t for t in complete if t >= serving_at) - serving_at
    finally:
        stop.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    if errors:
        raise errors[0]
    return [
        "breaker: SIGKILL under load (8 clients), failures 5, cooldown 5 s",
        f"  from SIGKILL to open            {opened * 1000:7.1f} ms",
        f"  from restart to complete again  {recovered * 1000:7.1f} ms   (cooldown 5000 ms)",
    ]


async def run(args: argparse.Namespace, catalog: Running, reviews: Running) -> list[str]:
    own_reviews = start_service("reviews")
    started: list[Running] = [own_reviews]
    gateway: Running | None = None
    try:
        async with AsyncExitStack() as stack:
            failing = await stack.enter_async_context(fault_proxy(reviews.port))
            tail = await stack.enter_async_context(fault_proxy(catalog.port))
            slow = await stack.enter_async_context(fault_proxy(catalog.port))
            hole = await stack.enter_async_context(fault_proxy(catalog.port, mode="blackhole"))
            killed = await stack.enter_async_context(fault_proxy(own_reviews.port))
            config = Path(args.tmp) / "resilience.yaml"
            config.write_text(
                CONFIG.format(
                    budget=BUDGET,
                    no_budget=NO_BUDGET,
                    failing_query=FAILING_QUERY,
                    failing=failing.url,
                    tail=tail.url,
                    slow=slow.url,
                    catalog=catalog.url,
                    hole=hole.url,
                    reviews=killed.url,
                )
            )
            gateway = start_gateway(
                config, env={"GATEWAY_LOG_LEVEL": "error", "GATEWAY_DRAIN_SECONDS": "0"}
            )
            connector = aiohttp.TCPConnector(limit=400)
            session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
            bench = Bench(session, gateway.url)
            await bench.wait_ready()
            progress("retries")
            lines = await retries(bench, failing, args.clients, args.seconds)
            progress("hedging")
            lines += await hedging(bench, tail, args.seconds)
            progress("coalescing")
            lines += await coalescing(bench, slow)
            progress("black hole")
            lines += await black_hole(bench, hole, args.seconds)
            progress("breaker")
            lines += await breaker(bench, killed, own_reviews, started)
            return lines
    finally:
        if gateway is not None:
            gateway.stop()
        for service in started:
            service.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time per figure")
    parser.add_argument("--clients", type=int, default=40, help="clients of the retry figure")
    args = parser.parse_args(argv)
    catalog, reviews = start_service("catalog"), start_service("reviews")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            args.tmp = tmp
            lines = asyncio.run(run(args, catalog, reviews))
    finally:
        catalog.stop()
        reviews.stop()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
