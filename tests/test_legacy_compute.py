"""Legacy (thread pool) and compute (process pool) backends end to end: a real inventory
service, a real gateway process, real worker processes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import psutil
import pytest

from services.catalog import product
from services.inventory.app import stock_xml
from services.inventory.client import InventoryClient
from services.pricing import bundle_offer
from tests.processes import Running, start, start_gateway

CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}"}}
  inventory:
    kind: legacy
    target: services.inventory.client:InventoryClient
    options: {{base_url: "{inventory}", timeout: 30}}
    threads: 8
    queue: 16
    timeout: 30s
  slow_inventory:
    kind: legacy
    target: services.inventory.client:InventoryClient
    options: {{base_url: "{inventory}", timeout: 30}}
    threads: 1
    timeout: 300ms
  context: {{kind: legacy, target: "tests.executor_targets:whoami"}}
  pricing: {{kind: compute, target: "services.pricing:bundle_offer", timeout: 20s}}
  hold: {{kind: compute, target: "tests.executor_targets:hold", timeout: 30s}}
endpoints:
  - path: /mixed/{{id}}
    calls:
      - {{name: product, backend: catalog, path: "/products/{{id}}", allow: [id, name], required: true}}
      - {{name: stock, backend: inventory, method: stock_level, args: {{sku: "{{id}}"}}, group: stock}}
      - {{name: offer, backend: pricing, args: {{id: "{{id}}"}}, group: offer}}
  - path: /stock/{{id}}
    timeout: 30s
    calls:
      - {{name: stock, backend: inventory, method: stock_level, args: {{sku: "{{id}}", gate: "{{query.gate}}"}}}}
  - path: /slow/{{id}}
    calls:
      - {{name: stock, backend: slow_inventory, method: stock_level, args: {{sku: "{{id}}", gate: "{{query.gate}}"}}}}
  - path: /whoami
    calls:
      - {{name: me, backend: context}}
  - path: /hold
    timeout: 30s
    calls:
      - {{name: held, backend: hold, args: {{port: "{{query.port}}"}}}}
"""


@pytest.fixture(scope="module")
def inventory() -> Iterator[Running]:
    service = start("inventory", [sys.executable, "-m", "services.inventory", "--latency", "0ms"])
    yield service
    assert service.stop() == 0


@pytest.fixture(scope="module")
def gateway(
    catalog: Running, inventory: Running, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    path = tmp_path_factory.mktemp("executors") / "gateway.yaml"
    path.write_text(CONFIG.format(catalog=catalog.url, inventory=inventory.url))
    running = start_gateway(path, env={"GATEWAY_COMPUTE_WORKERS": "2"})
    yield running
    assert running.stop() == 0


@pytest.fixture
async def client(gateway: Running) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60, limits=limits) as http:
        yield http


async def pool_metric(client: httpx.AsyncClient, name: str, pool: str) -> float:
    text = (await client.get("/metrics")).text
    match = re.search(rf'^gateway_pool_{name}{{kind="\w+",pool="{pool}"}} (\S+)$', text, re.M)
    assert match, f"no gateway_pool_{name} for {pool}"
    return float(match.group(1))


async def open_gate(inventory: Running, gate: str) -> None:
    await asyncio.to_thread(InventoryClient(inventory.url).open_gate, gate)


async def test_legacy_and_compute_results_merge_with_http(client: httpx.AsyncClient) -> None:
    response = await client.get("/mixed/42")
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-complete"] == "true"
    expected = product(42)
    assert expected is not None
    body = response.json()
    assert body["id"] == 42 and body["name"] == expected["name"]
    assert f"<level>{body['stock']['level']}</level>" in stock_xml(42)
    assert body["offer"] == bundle_offer("42")


async def test_request_context_is_visible_in_the_legacy_thread(client: httpx.AsyncClient) -> None:
    response = await client.get("/whoami", headers={"x-request-id": "trace-me-7"})
    assert response.status_code == 200, response.text
    assert response.json()["request_id"] == "trace-me-7"
    assert response.json()["thread"].startswith("legacy-context")


async def test_a_slow_legacy_call_times_out_on_time_and_keeps_its_thread(
    client: httpx.AsyncClient, inventory: Running
) -> None:
    gate = uuid.uuid4().hex
    started = time.monotonic()
    response = await client.get("/slow/7", params={"gate": gate})
    assert response.status_code == 504, response.text
    assert time.monotonic() - started < 5  # timeout 300ms; generous for a noisy machine
    assert response.headers["content-type"] == "application/problem+json"
    # the thread is still blocked in the legacy system: it counts as busy, and the pool
    # (1 thread, no queue) refuses the next call at once rather than queueing it
    assert await pool_metric(client, "busy_workers", "slow_inventory") == 1
    refused = await client.get("/slow/8", params={"gate": gate})
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"]
    await open_gate(inventory, gate)
    # the thread returns once the legacy system answers; only then is it free again
    deadline = time.monotonic() + 30
    while await pool_metric(client, "busy_workers", "slow_inventory") != 0:
        assert time.monotonic() < deadline, "the legacy thread never returned"
        await asyncio.sleep(0.05)  # polling interval of a condition, not a synchronisation
    assert (await client.get("/slow/9", params={"gate": gate})).status_code == 200


async def test_threads_plus_queue_are_served_and_the_rest_refused_fast(
    client: httpx.AsyncClient, inventory: Running
) -> None:
    gate = uuid.uuid4().hex

    async def get(sku: int) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = await client.get(f"/stock/{sku}", params={"gate": gate})
        return response, time.monotonic() - started

    tasks = [asyncio.create_task(get(1 + n % 100)) for n in range(200)]
    try:
        # the gate holds every admitted call, so the first 176 answers are all the refusals
        early = []
        for next_answer in asyncio.as_completed(tasks):
            early.append(await next_answer)
            if len(early) == 200 - 24:
                break
        assert sorted({r.status_code for r, _ in early}) == [503]
        assert all(r.headers["retry-after"] == "1" for r, _ in early)
        assert max(elapsed for _, elapsed in early) < 10  # fast, not queued behind the gate
        # meanwhile the gateway stays responsive, and the pool is exactly full
        started = time.monotonic()
        other = await client.get("/whoami")
        assert other.status_code == 200 and time.monotonic() - started < 2
        assert await pool_metric(client, "busy_workers", "inventory") == 8
        assert await pool_metric(client, "queued_calls", "inventory") == 16
        assert await pool_metric(client, "refused_calls_total", "inventory") >= 176
    finally:
        await open_gate(inventory, gate)
        done = await asyncio.gather(*tasks)
    served = [r for r, _ in done if r.status_code == 200]
    assert len(served) == 24
    assert len([r for r, _ in done if r.status_code == 503]) == 176


async def test_a_killed_compute_worker_fails_its_call_and_the_pool_recovers(
    client: httpx.AsyncClient, gateway: Running
) -> None:
    worker_pid: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    held: list[asyncio.StreamWriter] = []

    async def on_worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        worker_pid.set_result(int(await reader.readline()))

    server = await asyncio.start_server(on_worker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        call = asyncio.create_task(client.get("/hold", params={"port": str(port)}))
        async with asyncio.timeout(30):
            pid = await worker_pid  # the call is running in this worker now
        children = {p.pid for p in psutil.Process(gateway.process.pid).children(recursive=True)}
        assert pid in children, "the compute worker is a child of the gateway"
        os.kill(pid, signal.SIGKILL)
        response = await call
        assert response.status_code == 502, response.text
        assert "died" in response.text
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    # the broken pool was replaced: the next compute calls succeed on fresh workers
    for product_id in (5, 6):
        after = await client.get(f"/mixed/{product_id}")
        assert after.status_code == 200 and after.json()["offer"] == bundle_offer(str(product_id))
    assert await pool_metric(client, "replaced_total", "compute") == 1
    assert pid not in {p.pid for p in psutil.Process(gateway.process.pid).children(recursive=True)}


def test_inventory_service_and_client(inventory: Running) -> None:
    client = InventoryClient(inventory.url)
    record = client.stock_level("42")
    assert f"<level>{record['level']}</level>" in stock_xml(42)
    assert record["sku"] == 42
    with pytest.raises(Exception, match="unknown sku 4242"):
        client.stock_level("4242")
