"""Graceful drain with real processes: two replicas behind a health-checking load balancer,
steady load, SIGTERM to one replica.

Each clause of the drain is observed, not assumed from timings:
* nothing fails: the load goes on through the balancer, and every answer is a 200;
* at SIGTERM /readyz turns 503 at once while requests are still served;
* the listener closes only after the drain period (new connections are then refused);
* a request that was in flight at SIGTERM, holding one call in each kind of backend (HTTP,
  PostgreSQL, legacy thread, compute process), is still running after the listener closed
  and completes with 200 once its backends answer;
* afterwards the replica closes every pool (its log says so, in order, and no compute worker
  process survives it) and exits 0 within drain + graceful timeout + margin.

Each backend of the held request waits at a gate the test opens: an HTTP backend of its own,
an advisory lock the test holds in PostgreSQL, an inventory gate, and a TCP connection the
compute worker waits on (tests/executor_targets.py:hold).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import psutil
import pytest

from services.inventory.client import InventoryClient
from tests.loadbalancer import Backend, LoadBalancer
from tests.logwatch import LogWatch
from tests.processes import Running, start, start_gateway
from tests.threaded_http import BackloggedServer

DRAIN_SECONDS = 1.5
GRACEFUL_SECONDS = 10.0
MARGIN_SECONDS = 5.0  # as in k8s/base/deployment.yaml: pools closing and the exit
LOCK_KEY = 727_001  # the PostgreSQL advisory lock the held request's SQL call waits for
T = TypeVar("T")

CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}", timeout: 5s}}
  gate: {{kind: http, url: "{gate}", timeout: 30s}}
  db: {{kind: postgres, dsn: "{dsn}", pool: {{min: 1, max: 5}}, timeout: 5s}}
  held_db: {{kind: postgres, dsn: "{dsn}", pool: {{min: 1, max: 2}}, timeout: 30s}}
  inventory:
    kind: legacy
    target: services.inventory.client:InventoryClient
    options: {{base_url: "{inventory}", timeout: 30}}
    threads: 4
    timeout: 5s
  held_inventory:
    kind: legacy
    target: services.inventory.client:InventoryClient
    options: {{base_url: "{inventory}", timeout: 30}}
    threads: 1
    timeout: 30s
  pricing: {{kind: compute, target: services.pricing:bundle_offer, timeout: 5s}}
  hold: {{kind: compute, target: tests.executor_targets:hold, timeout: 30s}}
endpoints:
  # the steady load: every kind of backend, every call required
  - path: /item
    timeout: 5s
    calls:
      - {{name: product, backend: catalog, path: /products/1, required: true}}
      - {{name: total, backend: db, sql: "SELECT 41 + 1", result: value, required: true}}
      - name: stock
        backend: inventory
        method: stock_level
        args: {{sku: "1"}}
        required: true
      - {{name: offer, backend: pricing, args: {{id: "1"}}, required: true}}
  # in flight at SIGTERM: one call waiting at each gate
  - path: /held
    timeout: 30s
    calls:
      - {{name: http, backend: gate, path: /held, group: http, required: true}}
      - name: sql
        backend: held_db
        sql: "SELECT true FROM pg_advisory_xact_lock({lock_key})"
        result: value
        group: sql
        required: true
      - name: legacy
        backend: held_inventory
        method: stock_level
        args: {{sku: "1", gate: "{{query.gate}}"}}
        group: legacy
        required: true
      - name: compute
        backend: hold
        args: {{port: "{{query.port}}"}}
        group: compute
        required: true
"""

CLOSED_IN_ORDER = (
    # the app's exit stack unwinds in reverse order of opening: executors, HTTP, PostgreSQL
    "compute pool closed",
    "held_inventory: thread pool shut down",
    "inventory: thread pool shut down",
    "HTTP client session closed",
    "held_db: database pool closed",
    "db: database pool closed",
    "Application shutdown complete",
)


# --- the gates ------------------------------------------------------------------------------


class HttpGate:
    """An HTTP backend whose answers wait until `opened` is set; `arrived` counts requests."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.arrived = 0
        self.changed = threading.Condition()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with gate.changed:
                    gate.arrived += 1
                    gate.changed.notify_all()
                gate.opened.wait(60)
                body = json.dumps({"released": gate.opened.is_set()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = BackloggedServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextmanager
    def serving(self) -> Iterator[HttpGate]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.opened.set()
            self.server.shutdown()
            self.server.server_close()
            thread.join(timeout=10)


class AdvisoryLock:
    """A PostgreSQL session holding advisory lock `key`, on an event loop of its own."""

    def __init__(self, dsn: str, key: int) -> None:
        self.dsn, self.key = dsn, key
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.connection: asyncpg.Connection | None = None

    def _run(self, make: Callable[[], Awaitable[T]]) -> T:
        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)

    @contextmanager
    def held(self) -> Iterator[AdvisoryLock]:
        self.thread.start()
        try:
            self.connection = self._run(lambda: asyncpg.connect(self.dsn))
            try:
                self._run(lambda: self._conn.execute("SELECT pg_advisory_lock($1)", self.key))
                yield self
            finally:
                self._run(self._conn.close)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()

    @property
    def _conn(self) -> asyncpg.Connection:
        assert self.connection is not None
        return self.connection

    def waiters(self) -> int:
        """Sessions waiting for the lock right now."""
        sql = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND NOT granted"
        return int(self._run(lambda: self._conn.fetchval(sql, self.key)))

    def release(self) -> None:
        self._run(lambda: self._conn.execute("SELECT pg_advisory_unlock($1)", self.key))


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inventory() -> Iterator[Running]:
    service = start("inventory", [sys.executable, "-m", "services.inventory", "--latency", "0ms"])
    yield service
    assert service.stop() == 0


@pytest.fixture
def http_gate() -> Iterator[HttpGate]:
    with HttpGate().serving() as gate:
        yield gate


@pytest.fixture
def replicas(
    catalog: Running,
    inventory: Running,
    database_url: str,
    http_gate: HttpGate,
    tmp_path: Path,
) -> Iterator[tuple[Running, LogWatch, Running]]:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        CONFIG.format(
            catalog=catalog.url,
            gate=http_gate.url,
            dsn=database_url,
            inventory=inventory.url,
            lock_key=LOCK_KEY,
        )
    )
    env = {
        "GATEWAY_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "GATEWAY_GRACEFUL_TIMEOUT_SECONDS": str(GRACEFUL_SECONDS),
        # one worker held by the /held call, one for the steady load's pricing calls
        "GATEWAY_COMPUTE_WORKERS": "2",
    }
    leaving = start_gateway(config, env, stderr=subprocess.PIPE)
    log = LogWatch(leaving.process)
    staying = start_gateway(config, env)
    yield leaving, log, staying
    for replica in (leaving, staying):
        replica.stop()
    log.close()


# --- the test -------------------------------------------------------------------------------


def test_sigterm_drains_without_failing_a_request(
    replicas: tuple[Running, LogWatch, Running],
    http_gate: HttpGate,
    database_url: str,
    inventory: Running,
) -> None:
    leaving, log, staying = replicas
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

    with (
        balancer.running(),
        AdvisoryLock(database_url, LOCK_KEY).held() as lock,
        compute_hold() as hold,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        assert balancer.all_healthy.wait(timeout=60), "replicas never became ready"
        load = [pool.submit(steady_load) for _ in range(3)]
        try:
            gates = Gates(http_gate, lock, hold, InventoryClient(inventory.url))
            _drain(leaving, log, pool, statuses, served, gates)
        finally:
            stop.set()  # on any failure too, or the pool would wait for the load forever
        for future in load:
            future.result()

    assert statuses[200] > 0
    assert set(statuses) == {200}, f"failed requests during the drain: {statuses}"


@dataclass
class Gates:
    """Where each call of the held request waits."""

    http: HttpGate
    lock: AdvisoryLock
    hold: socket.socket
    inventory: InventoryClient


def _drain(
    leaving: Running,
    log: LogWatch,
    pool: ThreadPoolExecutor,
    statuses: Counter[int | str],
    served: threading.Condition,
    gates: Gates,
) -> None:
    with served:
        assert served.wait_for(lambda: statuses[200] >= 30, timeout=60), statuses
    children = psutil.Process(leaving.process.pid).children(recursive=True)
    spawned = [p for p in children if "multiprocessing.spawn" in " ".join(p.cmdline())]
    assert len(spawned) == 2, "the compute pool's workers are children of the gateway"

    gate = uuid.uuid4().hex
    port = str(gates.hold.getsockname()[1])
    with httpx.Client(base_url=leaving.url, timeout=60) as direct:
        held = pool.submit(direct.get, "/held", params={"gate": gate, "port": port})
        # Every call of the held request is running in its backend before the signal.
        worker_connection, _ = gates.hold.accept()  # the compute worker called in
        with worker_connection, worker_connection.makefile() as from_worker:
            assert from_worker.readline().strip().isdigit()
            with gates.http.changed:
                assert gates.http.changed.wait_for(lambda: gates.http.arrived == 1, timeout=30)
            _until(lambda: gates.lock.waiters() == 1, "the SQL call never waited for the lock")
            _until(
                lambda: _metric(direct, "gateway_pool_busy_workers", 'pool="held_inventory"') == 1,
                "the legacy call never started",
            )

            signaled_at = time.monotonic()
            leaving.process.send_signal(signal.SIGTERM)
            assert direct.get("/readyz").status_code == 503  # not ready at once...
            with httpx.Client(base_url=leaving.url, timeout=30) as fresh:
                assert fresh.get("/item").status_code == 200  # ...but still serving

            # The listener closes after the drain period, while the held request still runs.
            log.wait_for("Waiting for connections to close", timeout=DRAIN_SECONDS + 10)
            closed_at = time.monotonic()
            assert closed_at - signaled_at >= DRAIN_SECONDS
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", leaving.port), timeout=5).close()
            assert not held.done(), "the held request ended before its backends answered"

            # Its backends answer now; it completes during the graceful timeout.
            gates.http.opened.set()
            gates.lock.release()
            gates.inventory.open_gate(gate)
        # (and leaving this block closes the compute worker's connection: its call returns)

        response = held.result(timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["http"] == {"released": True}
        assert body["sql"] is True
        assert body["legacy"]["sku"] == 1
        assert isinstance(body["compute"]["pid"], int)

    # terminationGracePeriodSeconds, counted from the signal: the kubelet's SIGKILL deadline
    grace = DRAIN_SECONDS + GRACEFUL_SECONDS + MARGIN_SECONDS
    exit_code = leaving.process.wait(timeout=max(0.0, signaled_at + grace - time.monotonic()))
    assert exit_code == 0

    # Every pool was closed after the listener, in the exit stack's order, and cleanly.
    closing = log.wait_for("Waiting for connections to close", timeout=0)
    positions = [log.wait_for(line, timeout=10) for line in CLOSED_IN_ORDER]
    assert closing < positions[0] and positions == sorted(positions), log.lines
    assert not [line for line in log.lines if "terminated" in line or "failed" in line]
    _gone, alive = psutil.wait_procs(children, timeout=10)  # workers and resource tracker
    assert not alive, f"processes outlived the gateway: {alive}"

    # Traffic goes on, on the other replica.
    served_before = statuses[200]
    with served:
        assert served.wait_for(lambda: statuses[200] >= served_before + 20, timeout=30), statuses


# --- helpers --------------------------------------------------------------------------------


@contextmanager
def compute_hold() -> Iterator[socket.socket]:
    """The socket a held compute call connects to; it returns when the test closes it."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(30)
        yield server


def _until(condition: Callable[[], bool], message: str, timeout: float = 30) -> None:
    """Check `condition` until it holds; each check is a round trip, so this never spins."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message


def _metric(client: httpx.Client, name: str, labels: str) -> float:
    match = re.search(
        rf"^{name}{{[^}}]*{labels}[^}}]*}} (\S+)$", client.get("/metrics").text, re.MULTILINE
    )
    assert match, f"{name} {{{labels}}} is not exported"
    return float(match.group(1))
