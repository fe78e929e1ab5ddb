"""The resilience policies end to end: real backend processes, a real gateway process, and the
fault-injecting TCP proxy (tests/faultproxy.py) between them.

Each test starts its own gateway (policy state and metrics start from zero) and waits on
observable state (the proxy's counters, /metrics, answers), never on sleeps. Timing figures
(how much hedging cuts the p99, how fast a breaker recovers) are measured by
benchmarks/resilience.py; here the assertions are structural, with generous bounds.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.faultproxy import FaultProxy, fault_proxy
from tests.gateways import Gateway, gateway, until
from tests.processes import REPO, Running, start_service


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


# --- circuit breaker: a backend killed with SIGKILL under load, then restarted ---------------

COOLDOWN = 2.0
KILLED_CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}", timeout: 5s}}
  reviews:
    kind: http
    url: "{reviews}"
    timeout: 10s
    breaker: {{failures: 5, window: 10s, cooldown: {cooldown}s}}
endpoints:
  - path: /page/{{id}}
    timeout: 15s
    error_details: true
    calls:
      - {{name: product, backend: catalog, path: "/products/{{id}}", required: true, allow: [id, name]}}
      - name: reviews
        backend: reviews
        path: /reviews
        query: {{product: "{{id}}", delay: "{{query.review_delay}}"}}
        group: reviews
"""


@dataclass
class Answer:
    at: float
    status: int
    complete: bool
    reviews_error: str | None
    sent: float = 0.0
    client: int = -1


@dataclass
class Load:
    """Closed-loop clients on /page/{id}, bounded in count; every answer recorded."""

    http: httpx.AsyncClient
    answers: list[Answer] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, offset: int, most: int = 5000) -> None:
        for n in range(most):
            if self.stop.is_set():
                return
            answer = await page(self.http, 1 + (offset + n) % 100)
            answer.client = offset
            self.answers.append(answer)

    def since(self, moment: float) -> list[Answer]:
        return [a for a in self.answers if a.at >= moment]

    def all_sent_since(self, moment: float, clients: int) -> bool:
        """Whether each of the `clients` has an answer to a request sent after `moment`:
        then none of them still has a request in flight that was sent before it."""
        return len({a.client for a in self.answers if a.sent >= moment}) >= clients


async def page(http: httpx.AsyncClient, product: int, **params: str) -> Answer:
    sent = time.monotonic()
    response = await http.get(f"/page/{product}", params=params)
    body = response.json()
    error = body.get("_errors", {}).get("reviews", {}).get("error")
    complete = response.headers.get("x-gateway-complete") == "true"
    return Answer(time.monotonic(), response.status_code, complete, error, sent)


async def test_a_killed_backend_trips_the_breaker_partial_answers_go_on_and_it_recovers(
    catalog: Running, tmp_path: Path
) -> None:
    reviews = start_service("reviews")
    started = [reviews]  # the restarted one joins: every one is stopped, however this ends
    try:
        async with fault_proxy(reviews.port) as proxy:
            config = KILLED_CONFIG.format(catalog=catalog.url, reviews=proxy.url, cooldown=COOLDOWN)
            async with gateway(tmp_path, config) as gw:
                await _kill_under_load_and_restart(gw, proxy, reviews, started)
    finally:
        for service in started:
            service.stop()


async def _kill_under_load_and_restart(
    gw: Gateway, proxy: FaultProxy, reviews: Running, started: list[Running]
) -> None:
    host = proxy.url
    assert (await page(gw.http, 1)).complete
    # calls in flight when the backend dies: they would take 5 s if it lived
    before = proxy.requests
    slow = [asyncio.ensure_future(page(gw.http, n, review_delay="5s")) for n in range(1, 11)]
    await until(lambda: proxy.requests >= before + 10)
    load = Load(gw.http)
    clients = [asyncio.ensure_future(load.client(n * 1000)) for n in range(4)]
    try:
        await until(lambda: sum(a.complete for a in load.answers) >= 20)  # steady state

        killed_at = time.monotonic()
        reviews.kill()  # SIGKILL
        # in-flight calls fail at once (connection lost), not at their delay or timeout
        for answer in await asyncio.gather(*slow):
            assert (answer.status, answer.complete) == (200, False), answer
            assert answer.reviews_error and "cannot reach" in answer.reviews_error, answer
            assert answer.at - killed_at < 2.5, answer
        # the breaker opens after the threshold; then calls fail without touching the network
        await gw.wait_metric("gateway_breaker_state", lambda v: v == 1, backend="reviews")
        opened_at = time.monotonic()
        # a call that passed the breaker just before it opened may still be connecting:
        # count from when every client's request in flight at the opening has answered
        await until(lambda: load.all_sent_since(opened_at, len(clients)))
        connections = proxy.connections
        probes = await gw.metric("gateway_breaker_transitions_total", state="half_open")
        await until(lambda: sum(1 for a in load.since(opened_at) if a.reviews_error) >= 50)
        rejected = [a for a in load.since(opened_at) if a.reviews_error]
        assert any("circuit open" in (a.reviews_error or "") for a in rejected)
        more_probes = await gw.metric("gateway_breaker_transitions_total", state="half_open")
        # each half-open probe may open one connection; nothing else reaches the network
        assert proxy.connections - connections <= more_probes - probes

        restarted = start_service("reviews")
        started.append(restarted)
        proxy.upstream_port = restarted.port  # the gateway's target address stays the same
        async with httpx.AsyncClient(base_url=restarted.url, timeout=30) as direct:
            assert (await direct.get("/reviews", params={"product": "1"})).status_code == 200
        serving_at = time.monotonic()
        reopened = await gw.metric("gateway_breaker_transitions_total", state="open", host=host)
        # recovery within one cooldown: the next probe succeeds and closes the circuit
        await until(lambda: any(a.complete for a in load.since(serving_at)), COOLDOWN + 10)
        recovered_at = next(a.at for a in load.since(serving_at) if a.complete)
        assert recovered_at - serving_at < COOLDOWN + 1.5
        assert await gw.metric("gateway_breaker_state", backend="reviews") == 0
        assert (
            await gw.metric("gateway_breaker_transitions_total", state="open", host=host)
            == reopened
        ), "a probe failed after the backend was back"
        await until(lambda: sum(a.complete for a in load.since(recovered_at)) >= 20)
        # every change was logged, in order
        changes = re.findall(rf"breaker reviews {re.escape(host)}: (\w+) -> (\w+)", gw.log())
        assert changes[:2] == [("closed", "open"), ("open", "half_open")], changes
        assert changes[-1] == ("half_open", "closed"), changes
        assert len(changes) == 1 + 2 * (
            await gw.metric("gateway_breaker_transitions_total", state="half_open")
        )
    finally:
        load.stop.set()
        await asyncio.gather(*clients)
    # traffic to the endpoint got an answer all along: partial while the backend was down
    statuses = {a.status for a in load.answers}
    assert statuses == {200}, statuses
    down = [a for a in load.answers if killed_at < a.at < recovered_at]
    assert down and not any(a.complete for a in down if a.at > opened_at)


# --- retries: an always-503 backend sees at most ~1.2x the client requests ----------------

RETRY_CONFIG = """
version: 1
backends:
  reviews:
    kind: http
    url: "{reviews}"
    retry: {{attempts: 3, backoff: 50ms, max_backoff: 1s, on: [connect, timeout, 502, 503, 504], budget: 20%}}
  alone:  # the same, with a budget of its own: the measured run starts from a fresh one
    kind: http
    url: "{reviews}"
    retry: {{attempts: 3, backoff: 50ms, max_backoff: 1s, on: [connect, timeout, 502, 503, 504], budget: 20%}}
  catalog: {{kind: http, url: "{catalog}"}}
endpoints:
  - path: /alone/{{id}}
    calls:
      - {{name: alone, backend: alone, path: /reviews, query: {{product: "{{id}}", status: "503", delay: "{{query.delay}}"}}}}
  - path: /failing/{{id}}
    calls:
      - {{name: reviews, backend: reviews, path: /reviews, query: {{product: "{{id}}", status: "503", delay: "{{query.delay}}"}}}}
  - path: /busy/{{id}}
    calls:
      - {{name: product, backend: catalog, path: "/products/{{id}}"}}
"""


@pytest.mark.parametrize(
    ("clients", "requests", "delay", "saturated"),
    [
        (40, 800, "200ms", False),  # as measured before issue 11: a quiet machine
        (20, 200, "0ms", True),  # issue 11's run: fast failures, the gateway's CPU saturated
    ],
    ids=["quiet", "saturated"],
)
async def test_an_always_503_backend_gets_at_most_1_2x_the_requests_with_retries(
    catalog: Running,
    reviews: Running,
    tmp_path: Path,
    clients: int,
    requests: int,
    delay: str,
    saturated: bool,
) -> None:
    """An overloaded backend: every call is answered 503 (after `delay`).

    The budget counts calls and retries over the last 10 s (gateway/policies/retry.py): in
    that window retries stay within max(3, 20% of the calls), however fast failures come
    back and however busy the gateway is. The ratio is counted over the whole run from a
    fresh budget (clients stop after their current call, so every upstream request belongs
    to a counted client request, no window edges); all clients start at once, so 20% of the
    calls passes the minimum of 3 before the first failure comes back. The former budget
    counted what was in flight at an instant: with fast failures on a CPU-bound gateway it
    let 1.25x through here (1.95x in issue 11's run). Saturated: a load generator in a
    process of its own hammers another endpoint meanwhile.
    """
    async with (
        fault_proxy(reviews.port) as proxy,
        gateway(tmp_path, RETRY_CONFIG.format(reviews=proxy.url, catalog=catalog.url)) as gw,
    ):
        # alone, a failing call is retried: 3 tries in all
        assert (await gw.http.get("/alone/1", params={"delay": delay})).status_code == 502
        assert proxy.requests == 3
        assert await gw.metric("gateway_retries_total") == 2

        answers: list[int] = []
        queue = iter(range(requests))

        async def client() -> None:
            for n in queue:
                response = await gw.http.get(f"/failing/{1 + n % 100}", params={"delay": delay})
                answers.append(response.status_code)

        hammer = start_hammer(f"{gw.running.url}/busy/7") if saturated else None
        try:
            if hammer is not None:  # it is going: the gateway is answering it
                await gw.wait_metric(
                    "gateway_requests_total", lambda v: v >= 1000, endpoint="/busy/{id}"
                )
            busy_before = await gw.metric("gateway_requests_total", endpoint="/busy/{id}")
            upstream = proxy.requests
            await asyncio.gather(*(client() for _ in range(clients)))
            ratio = (proxy.requests - upstream) / requests
            busy = await gw.metric("gateway_requests_total", endpoint="/busy/{id}") - busy_before
        finally:
            if hammer is not None:
                hammer.terminate()
                hammer.wait(timeout=30)
        assert answers == [502] * requests
        assert ratio <= 1.2, f"upstream requests / client requests = {ratio:.3f}"
        assert await gw.metric("gateway_retry_budget_exhausted_total") > 0
        assert await gw.metric("gateway_retries_total") > 2  # the budget still let some retry
        if saturated:  # the gateway served the hammer far more than the measured run
            assert busy > 5 * requests, busy


def start_hammer(url: str) -> subprocess.Popen[bytes]:
    """tests/hammer.py on `url`, in a process of its own (stop it by PID)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.hammer", url, "--connections", "256"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )


# --- bulkhead and timeout: a black-holed backend ----------------------------------------

HOLE_TIMEOUT = 2.0
HOLE_CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}"}}
  hole: {{kind: http, url: "{hole}", timeout: {timeout}s, concurrency: 10}}
endpoints:
  - path: /hole/{{id}}
    timeout: 20s
    calls:
      - {{name: hole, backend: hole, path: "/products/{{id}}"}}
  - path: /ok/{{id}}
    calls:
      - {{name: product, backend: catalog, path: "/products/{{id}}"}}
"""


async def test_a_black_holed_backend_fails_at_the_timeout_and_the_bulkhead_refuses_the_rest(
    catalog: Running, tmp_path: Path
) -> None:
    async with fault_proxy(catalog.port, mode="blackhole") as hole:
        config = HOLE_CONFIG.format(catalog=catalog.url, hole=hole.url, timeout=HOLE_TIMEOUT)
        async with gateway(tmp_path, config) as gw:
            calls = [asyncio.ensure_future(timed(gw.http.get(f"/hole/{n}"))) for n in range(30)]
            # 10 calls reach the black hole; the other 20 are refused at once
            await until(lambda: sum(c.done() for c in calls) == 20 and hole.requests == 10)
            refused = [c.result() for c in calls if c.done()]
            for response, elapsed in refused:
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "1"
                assert elapsed < HOLE_TIMEOUT  # answered while the admitted ones still hang
            assert await gw.metric("gateway_bulkhead_rejected_total", backend="hole") == 20
            # the rest of the gateway answers meanwhile
            other, _ = await timed(gw.http.get("/ok/7"))
            assert other.status_code == 200 and other.headers["x-gateway-complete"] == "true"
            assert sum(c.done() for c in calls) == 20, "the black-holed calls ended too early"
            for response, elapsed in [await c for c in calls if not c.done()]:
                # at the call's timeout, far from the endpoint's 20 s deadline
                assert response.status_code == 504, response.text
                assert f"timeout of {HOLE_TIMEOUT:g}s" in response.text
                assert HOLE_TIMEOUT - 0.1 <= elapsed < 10, elapsed
            assert hole.requests == 10  # nothing was sent to it beyond the cap
            # the slots were given back: the next call is admitted (and times out again)
            response, elapsed = await timed(gw.http.get("/hole/1"))
            assert response.status_code == 504 and hole.requests == 11


# --- hedging: a backend with a slow tail --------------------------------------------------

TAIL_LATENCY = 3.0
HEDGE_CONFIG = """
version: 1
backends:
  tail:
    kind: http
    url: "{tail}"
    timeout: 10s
    hedge: {{after: 100ms, max: 1}}
endpoints:
  - path: /tail/{{id}}
    calls:
      - {{name: product, backend: tail, path: "/products/{{id}}"}}
"""


async def test_hedging_answers_a_slow_tail_without_waiting_for_it(
    catalog: Running, tmp_path: Path
) -> None:
    async with fault_proxy(catalog.port, mode="latency") as tail:
        tail.latency, tail.slow_every = TAIL_LATENCY, 5  # every 5th request: 3 s
        async with gateway(tmp_path, HEDGE_CONFIG.format(tail=tail.url)) as gw:
            answers = [await timed(gw.http.get(f"/tail/{n}")) for n in range(1, 31)]
            assert {r.status_code for r, _ in answers} == {200}
            slowest = max(elapsed for _, elapsed in answers)
            assert slowest < TAIL_LATENCY / 2, f"a request waited for the slow tail: {slowest}"
            # ~1 in 5 first tries was slow: a copy answered each of them
            won = await gw.metric("gateway_hedges_won_total", backend="tail")
            assert won >= 4
            assert await gw.metric("gateway_hedges_sent_total", backend="tail") >= won


# --- coalescing: 100 identical concurrent GETs ---------------------------------------------

COALESCE_CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}", coalesce: true}}
endpoints:
  - path: /item/{{id}}
    calls:
      - {{name: product, backend: catalog, path: "/products/{{id}}"}}
"""


async def test_identical_concurrent_gets_reach_the_backend_once(
    catalog: Running, tmp_path: Path
) -> None:
    async with (
        fault_proxy(catalog.port) as proxy,
        gateway(tmp_path, COALESCE_CONFIG.format(catalog=proxy.url)) as gw,
    ):
        proxy.hold()  # the first request waits at the proxy while the others arrive
        calls = [asyncio.ensure_future(gw.http.get("/item/42")) for _ in range(100)]
        try:
            await gw.wait_metric("gateway_coalesced_requests_total", lambda v: v == 99)
            assert proxy.requests == 1
        finally:
            proxy.release()
        answers = await asyncio.gather(*calls)
        assert {r.status_code for r in answers} == {200}
        assert len({r.content for r in answers}) == 1
        assert proxy.requests == 1
        # a later request is not served from memory: coalescing is not a cache
        assert (await gw.http.get("/item/42")).status_code == 200
        assert proxy.requests == 2


# --- a breaker per host: a failing host leaves the round-robin -------------------------------

HOSTS_CONFIG = """
version: 1
backends:
  catalog:
    kind: http
    urls: ["{good}", "{bad}"]
    breaker: {{failures: 3, window: 10s, cooldown: 60s}}
endpoints:
  - path: /item/{{id}}
    calls:
      - {{name: product, backend: catalog, path: "/products/{{id}}"}}
"""


async def test_a_failing_host_is_taken_out_of_the_round_robin(
    catalog: Running, tmp_path: Path
) -> None:
    async with (
        fault_proxy(catalog.port) as good,
        fault_proxy(catalog.port, mode="reset") as bad,
        gateway(tmp_path, HOSTS_CONFIG.format(good=good.url, bad=bad.url)) as gw,
    ):
        statuses = [(await gw.http.get(f"/item/{n}")).status_code for n in range(1, 7)]
        # round-robin: every second call went to the bad host until its 3rd failure
        assert statuses == [200, 502] * 3
        assert await gw.metric("gateway_breaker_state", host=bad.url) == 1
        assert await gw.metric("gateway_breaker_state", host=good.url) == 0
        # (aiohttp may resend a GET once on a dropped connection: 1 or 2 per failed call)
        tried = bad.connections
        assert 3 <= tried <= 6
        statuses = [(await gw.http.get(f"/item/{n}")).status_code for n in range(7, 21)]
        assert statuses == [200] * 14
        assert (good.requests, bad.connections) == (17, tried)  # the bad host is left alone


# --- global load shedding ---------------------------------------------------------------

SHED_CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}"}}
endpoints:
  - path: /item/{{id}}
    calls:
      - {{name: product, backend: catalog, path: "/products/{{id}}"}}
"""


async def test_requests_beyond_the_in_flight_cap_are_shed_at_once(
    catalog: Running, tmp_path: Path
) -> None:
    async with fault_proxy(catalog.port) as proxy:
        config = SHED_CONFIG.format(catalog=proxy.url)
        async with gateway(tmp_path, config, env={"GATEWAY_MAX_IN_FLIGHT": "5"}) as gw:
            proxy.hold()
            held = [asyncio.ensure_future(gw.http.get(f"/item/{n}")) for n in range(1, 6)]
            try:
                await until(lambda: proxy.requests == 5)  # the gateway is full now
                shed, _ = await timed(gw.http.get("/item/6"))
                assert shed.status_code == 503
                assert shed.headers["retry-after"] == "1"
                assert shed.headers["content-type"] == "application/problem+json"
                assert (await gw.http.get("/livez")).status_code == 200  # probes are not shed
                assert await gw.metric("gateway_shed_requests_total") == 1
                assert proxy.requests == 5
            finally:
                proxy.release()
            assert {r.status_code for r in await asyncio.gather(*held)} == {200}
            assert (await gw.http.get("/item/6")).status_code == 200
