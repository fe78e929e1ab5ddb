"""The operations surface: the admin port, and /metrics of a whole `--workers N` group."""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import httpx
import psutil
import pytest
from prometheus_client.mmap_dict import MmapedDict

from tests.processes import start, start_gateway
from tests.recording_backend import RecordingBackend

CONFIG = """
version: 1
backends:
  svc: {{kind: http, url: "{url}"}}
endpoints:
  - path: /x/{{id}}
    calls: [{{name: a, backend: svc, path: "/a/{{id}}"}}]
"""


@pytest.fixture
def backend() -> Iterator[RecordingBackend]:
    recording = RecordingBackend()
    yield recording
    recording.close()


def reserved_port() -> socket.socket:
    """A port held for the gateway: bound with SO_REUSEPORT (never listening), so nothing
    else takes it while the gateway binds it too (race-free, unlike closing a probe)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def test_the_admin_port_serves_operations_and_the_public_port_does_not(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(url=backend.url))
    with reserved_port() as held:
        admin_port = held.getsockname()[1]
        gateway = start_gateway(
            config, env={"GATEWAY_ADMIN_PORT": str(admin_port), "GATEWAY_DRAIN_SECONDS": "0"}
        )
        try:
            with httpx.Client(base_url=gateway.url, timeout=30) as public:
                # answered once the lifespan has started, and it starts the admin listener first
                assert public.get("/x/1").status_code == 200
                for path in ("/metrics", "/readyz", "/status", "/status/live"):
                    assert public.get(path).status_code == 404, path
                assert public.get("/livez").status_code == 200
                assert public.get("/openapi.json").status_code == 200
            with httpx.Client(base_url=f"http://127.0.0.1:{admin_port}", timeout=30) as admin:
                metrics = admin.get("/metrics")
                assert metrics.status_code == 200
                assert (
                    'gateway_requests_total{endpoint="/x/{id}",method="GET",status="200"} 1.0'
                    in metrics.text
                )
                ready = admin.get("/readyz")
                assert ready.status_code == 200 and ready.json()["status"] == "ready"
                status = admin.get("/status")
                assert status.status_code == 200 and "/x/{id}" in status.text
                assert admin.get("/livez").status_code == 200
        finally:
            assert gateway.stop() == 0


# prometheus_client leaves this reader unannotated: it yields (key, value, timestamp, position)
read_samples = cast(
    Callable[[str], Iterator[tuple[str, float, float, int]]], MmapedDict.read_all_values_from_file
)


def per_worker_requests(directory: str) -> dict[int, float]:
    """gateway_requests_total summed per worker, from the group's files."""
    counts: dict[int, float] = {}
    for path in Path(directory).glob("counter_*.db"):
        named = re.search(r"counter_(\d+)\.db", path.name)
        assert named is not None, path
        pid = int(named.group(1))
        for key, value, _, _ in read_samples(str(path)):
            if json.loads(key)[1] == "gateway_requests_total":
                counts[pid] = counts.get(pid, 0.0) + value
    return counts


def test_two_workers_report_the_requests_of_both(tmp_path: Path, backend: RecordingBackend) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(url=backend.url))
    group = start(
        "gateway",
        [sys.executable, "-m", "gateway", "run", "--config", str(config), "--workers", "2"],
        env={"GATEWAY_DRAIN_SECONDS": "0"},
    )
    try:

        def one(i: int) -> int:
            # a connection per request, so the kernel hands them to both workers
            with httpx.Client(base_url=group.url, timeout=30) as client:
                return client.get(f"/x/{i}", headers={"Connection": "close"}).status_code

        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(one, range(1000)))
        assert statuses == [200] * 1000
        workers = psutil.Process(group.process.pid).children()
        directory = workers[0].environ()["PROMETHEUS_MULTIPROC_DIR"]
        spread = per_worker_requests(directory)
        assert sorted(spread) == sorted(w.pid for w in workers if w.pid in spread)
        assert len(spread) == 2 and min(spread.values()) > 0, spread  # both answered some
        for _ in range(4):  # whichever worker answers the scrape, it counts the group
            with httpx.Client(base_url=group.url, timeout=30) as client:
                text = client.get("/metrics", headers={"Connection": "close"}).text
            assert (
                'gateway_requests_total{endpoint="/x/{id}",method="GET",status="200"} 1000.0'
                in text
            )
            assert re.search(r'gateway_requests_in_flight\{pid="\d+"\}', text)
    finally:
        assert group.stop() == 0
    assert Path(directory).name.startswith("fanout-metrics-")
    assert not Path(directory).exists()  # the run's directory went with it
