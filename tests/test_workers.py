"""`--workers 2`: two gateway processes on one port (SO_REUSEPORT), both serving, and a
SIGTERM that drains every worker: /readyz turns 503 while requests are still served, a
request in flight completes, and the supervisor exits 0 with no process left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from tests.processes import REPO
from tests.threaded_http import JsonHandler, ThreadedHttp

DRAIN_SECONDS = 2.0

CONFIG = """
version: 1
backends:
  gate: {{kind: http, url: "{gate}", timeout: 30s}}
  whoami: {{kind: legacy, target: "tests.executor_targets:pid", threads: 2}}
endpoints:
  - path: /pid
    calls: [{{backend: whoami}}]
  - path: /held
    timeout: 30s
    calls: [{{backend: gate, path: /wait}}]
"""


class Gate:
    """An HTTP backend whose answers wait until `opened`; `arrived` is set on the first."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.arrived = threading.Event()
        gate = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                gate.arrived.set()
                gate.opened.wait(60)
                self.send_json({"released": True})

        self.http = ThreadedHttp(Handler)
        self.url = self.http.url

    def close(self) -> None:
        self.opened.set()
        self.http.close()


@pytest.fixture
def gate() -> Iterator[Gate]:
    server = Gate()
    yield server
    server.close()


@pytest.fixture
def reserved_port() -> Iterator[int]:
    """A port no one else takes while the test runs: held by a bound, never-listening socket
    with SO_REUSEPORT, which the workers' own sockets may share (it receives nothing)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class Started:
    """Reads the supervisor's log; `both` is set once two workers have started."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.both = threading.Event()
        self.third = threading.Event()  # a replacement worker has started
        self.thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.lines.append(line)
            count = sum("Application startup complete" in seen for seen in self.lines)
            if count >= 2:
                self.both.set()
            if count >= 3:
                self.third.set()


@pytest.fixture
def workers(
    gate: Gate, reserved_port: int, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], Started]]:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(gate=gate.url))
    argv = [sys.executable, "-m", "gateway", "run", "--config", str(config)]
    process = subprocess.Popen(
        [*argv, "--port", str(reserved_port), "--workers", "2"],
        cwd=REPO,
        env={
            **os.environ,
            "GATEWAY_DRAIN_SECONDS": str(DRAIN_SECONDS),
            "GATEWAY_GRACEFUL_TIMEOUT_SECONDS": "20",
        },
        stderr=subprocess.PIPE,
        text=True,
    )
    started = Started(process)
    yield process, started
    if process.poll() is None:
        process.kill()
        process.wait()
    started.thread.join(timeout=10)
    assert process.stderr is not None
    process.stderr.close()


def test_two_workers_serve_one_port_and_drain_together(
    workers: tuple[subprocess.Popen[str], Started], gate: Gate, reserved_port: int
) -> None:
    supervisor, started = workers
    base = f"http://127.0.0.1:{reserved_port}"
    assert started.both.wait(60), "".join(started.lines)
    pids: set[int] = set()
    with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for _ in range(200):  # new connections: the kernel spreads them over the workers
            pids.add(client.get(f"{base}/pid").json()["pid"])
            if len(pids) == 2:
                break
    children = psutil.Process(supervisor.pid).children(recursive=True)
    assert len(pids) == 2 and pids <= {p.pid for p in children}

    with ThreadPoolExecutor(max_workers=2) as pool, httpx.Client(timeout=60) as held_client:
        held = pool.submit(held_client.get, f"{base}/held")
        assert gate.arrived.wait(30)
        supervisor.send_signal(signal.SIGTERM)
        # every worker drains: not ready, but still serving new connections
        with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as fresh:
            readiness = {fresh.get(f"{base}/readyz").status_code for _ in range(10)}
            assert readiness == {503}
            assert {fresh.get(f"{base}/pid").status_code for _ in range(10)} == {200}
        assert not held.done()
        gate.opened.set()
        response = held.result(timeout=30)
        assert response.status_code == 200 and response.json() == {"released": True}

    assert supervisor.wait(timeout=DRAIN_SECONDS + 20 + 15) == 0
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"processes outlived the supervisor: {alive}"


def test_a_worker_that_dies_is_replaced(
    workers: tuple[subprocess.Popen[str], Started], reserved_port: int
) -> None:
    supervisor, started = workers
    assert started.both.wait(60), "".join(started.lines)
    victim = next(
        p
        for p in psutil.Process(supervisor.pid).children()
        if "resource_tracker" not in " ".join(p.cmdline())
    )
    victim.kill()
    assert started.third.wait(60), "".join(started.lines)
    assert any(f"worker {victim.pid} exited" in line for line in started.lines)
    with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        assert {
            client.get(f"http://127.0.0.1:{reserved_port}/pid").status_code for _ in range(20)
        } == {200}
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=DRAIN_SECONDS + 20 + 15) == 0
