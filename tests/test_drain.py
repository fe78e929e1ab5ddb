"""Graceful drain with real processes: two replicas behind a health-checking load balancer,
steady load, SIGTERM to one replica. Nothing may fail, and in-flight requests complete."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.loadbalancer import Backend, LoadBalancer
from tests.processes import Running, start_gateway

DRAIN_SECONDS = 1.5
GRACEFUL_SECONDS = 10.0
CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}", timeout: 5s}}
endpoints:
  - path: /item
    timeout: 5s
    forward_query: [delay]
    calls:
      - {{name: item, backend: catalog, path: /products/1, required: true}}
"""


@pytest.fixture
def replicas(catalog: Running, tmp_path: Path) -> Iterator[list[Running]]:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(catalog=catalog.url))
    env = {
        "GATEWAY_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "GATEWAY_GRACEFUL_TIMEOUT_SECONDS": str(GRACEFUL_SECONDS),
    }
    started = [start_gateway(config, env), start_gateway(config, env)]
    yield started
    for replica in started:
        replica.stop()


def test_sigterm_drains_without_failing_a_request(replicas: list[Running]) -> None:
    leaving, staying = replicas
    balancer = LoadBalancer([Backend(leaving.port), Backend(staying.port)])
    statuses: Counter[int | str] = Counter()
    stop = threading.Event()
    served = threading.Condition()  # notified on every answer, so waits need no polling

    def steady_load() -> None:
        # a new connection per request, as clients arriving through a Service would open
        with httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not stop.is_set():
                try:
                    outcome: int | str = client.get(
                        f"http://127.0.0.1:{balancer.port}/item"
                    ).status_code
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                with served:
                    statuses[outcome] += 1
                    served.notify_all()

    with balancer.running(), ThreadPoolExecutor(max_workers=8) as pool:
        try:
            exit_code, drained_for, load = _drain_under_load(
                balancer, leaving, pool, steady_load, statuses, served
            )
        finally:
            stop.set()  # on any failure too, or the pool would wait for the load forever
        for future in load:
            future.result()

    assert exit_code == 0
    assert drained_for >= DRAIN_SECONDS  # it kept serving through the drain period
    assert set(statuses) == {200}, f"failed requests during the drain: {statuses}"


def _drain_under_load(
    balancer: LoadBalancer,
    leaving: Running,
    pool: ThreadPoolExecutor,
    steady_load: Callable[[], None],
    statuses: Counter[int | str],
    served: threading.Condition,
) -> tuple[int, float, list[Future[None]]]:
    assert balancer.all_healthy.wait(timeout=30), "replicas never became ready"
    load = [pool.submit(steady_load) for _ in range(3)]
    with served:
        assert served.wait_for(lambda: statuses[200] >= 50, timeout=30), statuses

    with httpx.Client(base_url=leaving.url, timeout=30) as direct:
        slow = [pool.submit(direct.get, "/item", params={"delay": "2s"}) for _ in range(3)]
        deadline = time.monotonic() + 10
        while _in_flight(direct) < 3:  # observe the state instead of assuming a timing
            assert time.monotonic() < deadline, "slow requests never reached the replica"

        signaled_at = time.monotonic()
        leaving.process.send_signal(signal.SIGTERM)
        assert direct.get("/readyz").status_code == 503  # not ready at once...
        assert direct.get("/item").status_code == 200  # ...but still serving
        exit_code = leaving.process.wait(timeout=DRAIN_SECONDS + GRACEFUL_SECONDS + 5)
        exited_at = time.monotonic()

    served_before_exit = statuses[200]
    assert all(f.result().status_code == 200 for f in slow), "in-flight requests were dropped"
    with served:  # traffic goes on, on the other replica
        more = served.wait_for(lambda: statuses[200] >= served_before_exit + 20, timeout=30)
        assert more, f"traffic stopped after the exit: {statuses}"
    return exit_code, exited_at - signaled_at, load


def _in_flight(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("gateway_requests_in_flight "):
            return float(line.split()[1])
    raise AssertionError("gateway_requests_in_flight is not exported")
