"""Hot reload with real processes: a SIGHUP under 200 requests/s that adds an endpoint,
changes a call and removes two backends (one with a call in flight); an invalid file that
leaves the old config serving; `--workers 2`, where every worker reloads; `--watch`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.logwatch import LogWatch
from tests.processes import REPO, start_gateway
from tests.threaded_http import JsonHandler, ThreadedHttp


class Upstream:
    """Counts requests per path; `/wait` answers once `opened` is set."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.opened = threading.Event()
        self.waiting = threading.Event()
        self.lock = threading.Lock()
        upstream = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                with upstream.lock:
                    upstream.seen[self.path] += 1
                if self.path.startswith("/wait"):
                    upstream.waiting.set()
                    upstream.opened.wait(60)
                self.send_json({"id": 1, "name": "n", "path": self.path, "extra": 1})

        self.http = ThreadedHttp(Handler)
        self.url = self.http.url

    def close(self) -> None:
        self.opened.set()
        self.http.close()


BEFORE = """
version: 1
backends:
  main: {{kind: http, url: "{up}", timeout: 30s, cache: {{ttl: 60s}}}}
  doomed: {{kind: http, url: "{up}", timeout: 30s}}
  held_pool: {{kind: legacy, target: "tests.executor_targets:hold", threads: 2, timeout: 30s}}
endpoints:
  - path: /product/{{id}}
    calls: [{{backend: main, path: "/products/{{id}}", allow: [id, name, extra]}}]
  - path: /doomed
    timeout: 30s
    calls: [{{backend: doomed, path: /wait}}]
  - path: /legacy-held
    timeout: 30s
    calls: [{{backend: held_pool, args: {{port: "{{query.port}}"}}}}]
"""

AFTER = """
version: 1
backends:
  main: {{kind: http, url: "{up}", timeout: 30s, cache: {{ttl: 60s}}}}
endpoints:
  - path: /product/{{id}}
    calls: [{{backend: main, path: "/products/{{id}}", allow: [id, name]}}]
  - path: /new
    calls: [{{backend: main, path: /new-route}}]
"""


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def hold() -> Iterator[socket.socket]:
    """The socket a held legacy call connects to; it returns when the test closes it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.split()[-1])
    raise AssertionError(f"no {line_start} in /metrics")


class Tally:
    """Answers by status, counted as they come; `wait_for` blocks until enough came."""

    def __init__(self) -> None:
        self.statuses: Counter[int | str] = Counter()
        self.changed = threading.Condition()

    def add(self, outcome: int | str) -> None:
        with self.changed:
            self.statuses[outcome] += 1
            self.changed.notify_all()

    def total(self) -> int:
        with self.changed:
            return sum(self.statuses.values())

    def wait_for(self, count: int, timeout: float = 60) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: sum(self.statuses.values()) >= count, timeout)


async def steady(url: str, rate: float, stop: threading.Event, tally: Tally) -> None:
    """`rate` requests/s against product pages until `stop`, each answer counted."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        pending: set[asyncio.Task[None]] = set()

        async def one(i: int) -> None:
            try:
                async with session.get(f"{url}/product/{i % 50}") as response:
                    await response.read()
                    tally.add(response.status)
            except aiohttp.ClientError as exc:
                tally.add(type(exc).__name__)

        i = 0
        started = time.monotonic()
        while not stop.is_set():
            i += 1
            task = asyncio.create_task(one(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
            # pacing a load generator, not synchronising a test
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        await asyncio.gather(*pending)


def test_a_sighup_under_load_swaps_routes_without_failing_a_request(
    upstream: Upstream, hold: socket.socket, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(BEFORE.format(up=upstream.url))
    gateway = start_gateway(config, stderr=subprocess.PIPE)
    log = LogWatch(gateway.process, "gateway")
    tally = Tally()
    stop = threading.Event()
    held: list[socket.socket] = []
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            assert http.get("/product/1").json() == {"id": 1, "name": "n", "extra": 1}
            assert upstream.seen["/products/1"] == 1
            before = http.get("/readyz").json()["checks"]["config"]["hash"]
            with ThreadPoolExecutor(max_workers=3) as pool:
                try:
                    load = pool.submit(asyncio.run, steady(gateway.url, 200, stop, tally))
                    # in flight across the reload: an HTTP call and a legacy call, both on
                    # backends the new config removes
                    doomed = pool.submit(http.get, "/doomed")
                    assert upstream.waiting.wait(30)
                    port = hold.getsockname()[1]
                    legacy = pool.submit(
                        httpx.get, f"{gateway.url}/legacy-held?port={port}", timeout=30
                    )
                    held.append(hold.accept()[0])
                    # the call says who runs it first: read, so closing is a clean end
                    assert held[0].recv(64).strip().isdigit()
                    tally.wait_for(400)  # about two seconds of load first
                    config.write_text(AFTER.format(up=upstream.url))
                    gateway.process.send_signal(signal.SIGHUP)
                    log.wait_for("config reloaded", timeout=30)
                    # the new routes answer at once; the old ones are gone
                    assert http.get("/new").status_code == 200
                    assert http.get("/doomed").status_code == 404
                    assert http.get("/product/1").json() == {"id": 1, "name": "n"}  # changed call
                    assert upstream.seen["/products/1"] == 1  # the unchanged backend kept its cache
                    released_at = len(log.lines)
                    assert not doomed.done() and not legacy.done()
                    upstream.opened.set()
                    held.pop().close()
                    # both finished on the old config
                    assert doomed.result(timeout=30).status_code == 200
                    answer = legacy.result(timeout=30)
                    assert answer.status_code == 200, answer.text
                    # the removed backends close only after their last in-flight call
                    closing = log.wait_for_after("backend held_pool: closing", released_at, 30)
                    log.wait_for_after("held_pool: thread pool shut down", closing, 30)
                    log.wait_for_after("generation 1 retired", released_at, 30)
                    tally.wait_for(tally.total() + 400)  # two more seconds on the new routes
                    stop.set()
                    load.result(timeout=60)
                finally:  # whatever failed above, the load and the holds end
                    stop.set()
                    upstream.opened.set()
                    for connection in held:
                        connection.close()

            ready = http.get("/readyz").json()["checks"]
            text = http.get("/metrics").text
    finally:
        stop.set()
        assert gateway.stop() == 0
        log.close()
    assert set(tally.statuses) == {200}, tally.statuses
    assert tally.total() >= 800
    assert ready["config"]["hash"] != before and ready["config"]["generation"] == 2
    assert metric(text, 'gateway_config_reloads_total{outcome="ok"}') == 1
    assert metric(text, f'gateway_config_info{{hash="{ready["config"]["hash"]}"}}') == 1


def test_an_invalid_file_on_sighup_leaves_the_old_config_serving(
    upstream: Upstream, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(AFTER.format(up=upstream.url))
    gateway = start_gateway(config, stderr=subprocess.PIPE)
    log = LogWatch(gateway.process, "gateway")
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            assert http.get("/new").status_code == 200
            config.write_text(
                AFTER.format(up=upstream.url).replace("backend: main", "backend: mian")
            )
            gateway.process.send_signal(signal.SIGHUP)
            line = log.lines[log.wait_for("refused, still serving", timeout=30)]
            assert "unknown backend 'mian'" in line and "Traceback" not in "\n".join(log.lines)
            assert log.count("refused, still serving") == 1
            assert http.get("/new").status_code == 200  # the old routes still serve
            text = http.get("/metrics").text
    finally:
        assert gateway.stop() == 0
        log.close()
    assert metric(text, 'gateway_config_reloads_total{outcome="invalid"}') == 1
    assert metric(text, "gateway_config_reload_failures_total{hash=") == 1


@pytest.fixture
def reserved_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_every_worker_reloads_on_sighup(
    upstream: Upstream, reserved_port: int, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(AFTER.format(up=upstream.url).replace("/new", "/old"))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "run",
            "--config",
            str(config),
            "--port",
            str(reserved_port),
            "--workers",
            "2",
        ],
        cwd=REPO,
        env={**os.environ, "GATEWAY_DRAIN_SECONDS": "0"},
        stderr=subprocess.PIPE,
    )
    log = LogWatch(process, "workers")
    try:
        started = log.wait_for("Application startup complete", timeout=60)
        log.wait_for_after("Application startup complete", started + 1, 60)
        config.write_text(AFTER.format(up=upstream.url))
        process.send_signal(signal.SIGHUP)
        first = log.wait_for("config reloaded", timeout=30)
        log.wait_for_after("config reloaded", first + 1, timeout=30)
        with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            codes = {
                http.get(f"http://127.0.0.1:{reserved_port}/new").status_code for _ in range(20)
            }
        assert codes == {200}  # whichever worker answers has the new routes
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        log.close()


def test_watch_reloads_when_the_file_changes(upstream: Upstream, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(AFTER.format(up=upstream.url).replace("/new", "/old"))
    gateway = start_gateway(config, env={"GATEWAY_WATCH": "1"}, stderr=subprocess.PIPE)
    log = LogWatch(gateway.process, "gateway")
    try:
        log.wait_for("watching", timeout=30)
        config.write_text(AFTER.format(up=upstream.url))
        log.wait_for("config reloaded", timeout=30)
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            assert http.get("/new").status_code == 200
            assert http.get("/old").status_code == 404
    finally:
        assert gateway.stop() == 0
        log.close()
