"""The SLO verdict of the in-cluster load test (k8s/loadtest/slo.py, slo_verdict.py): a table
of verdicts, and real locust runs (a master and one worker process, as in the cluster) whose
exit code is the verdict. locust itself is never imported here: it monkey-patches the process
(gevent), so it only runs as a child process.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.processes import Running, start_gateway

ROOT = Path(__file__).resolve().parents[1]
SLO_RULES = ROOT / "k8s" / "loadtest" / "slo.py"
SLO_HOOK = ROOT / "k8s" / "loadtest" / "slo_verdict.py"
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"

# The routes the locustfile's `mix` and `slow` scenarios request, as in examples/demo.yaml.
ROUTES = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}"}}
  reviews: {{kind: http, url: "{reviews}"}}
endpoints:
  - path: /api/products/{{id}}
    forward_query: [delay]
    calls:
      - {{name: product, backend: catalog, path: "/products/{{id}}", required: true}}
      - {{name: reviews, backend: reviews, path: /reviews, query: {{product: "{{id}}"}}}}
  - path: /api/home
    forward_query: [delay]
    calls:
      - {{name: products, backend: catalog, path: /products, target: items, group: products}}
      - {{name: featured, backend: reviews, path: /reviews, query: {{product: "1"}}}}
  - path: /api/catalog/{{rest:path}}
    proxy: {{backend: catalog, path: "/{{rest}}"}}
"""


def load_slo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_loadtest_slo", SLO_RULES)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


slo = load_slo()


@pytest.mark.parametrize(
    ("requests", "failures", "p99", "limits", "missed"),
    [
        (1000, 0, 250.0, {"max_p99_ms": 1000}, []),
        (1000, 0, 1000.0, {"max_p99_ms": 1000}, []),  # at the limit passes
        (1000, 0, 1001.0, {"max_p99_ms": 1000}, ["max-p99-ms"]),
        (1000, 1, 250.0, {"max_p99_ms": 1000}, ["max-failure-ratio"]),
        (1000, 1, 250.0, {"max_failure_ratio": 0.001}, []),
        (1000, 2, 250.0, {"max_failure_ratio": 0.001}, ["max-failure-ratio"]),
        (1000, 5, 5000.0, {"max_p99_ms": 1000}, ["max-failure-ratio", "max-p99-ms"]),
        (1000, 0, 99999.0, {}, []),  # no latency SLO: not checked
        (0, 0, None, {"max_p99_ms": 1000}, ["min-requests", "max-p99-ms"]),
        (10, 0, 5.0, {"min_requests": 100}, ["min-requests"]),
    ],
)
def test_verdict(
    requests: int, failures: int, p99: float | None, limits: dict[str, float], missed: list[str]
) -> None:
    lines = slo.verdict(requests, failures, p99, slo.Slo(**limits))
    assert [line.split(":")[0] for line in lines] == missed


def run_locust(gateway: Running, env: dict[str, str], *options: str) -> tuple[int, str]:
    """A short headless run, master and one worker process; its exit code and log."""
    locust = Path(sys.executable).with_name("locust")
    with socket.socket() as probe:  # a free port for the master, not locust's default 5557,
        probe.bind(("127.0.0.1", 0))  # which another locust on this machine may hold
        port = probe.getsockname()[1]
    result = subprocess.run(
        [
            str(locust),
            f"--locustfile={LOCUSTFILE},{SLO_HOOK}",
            "--headless",
            "--processes=1",
            "--master-bind-host=127.0.0.1",
            f"--master-bind-port={port}",
            "--master-host=127.0.0.1",  # where the forked worker connects
            f"--master-port={port}",
            "--users=4",
            "--spawn-rate=4",
            "--run-time=3s",
            "--stop-timeout=5",
            "--only-summary",
            f"--host={gateway.url}",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env={**_clean_env(), **env},
    )
    return result.returncode, result.stdout + result.stderr


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("FANOUT_", "LOCUST_"))}


@pytest.fixture(scope="module")
def gateway(
    catalog: Running, reviews: Running, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    config = tmp_path_factory.mktemp("slo") / "gateway.yaml"
    config.write_text(ROUTES.format(catalog=catalog.url, reviews=reviews.url))
    running = start_gateway(config, env={"GATEWAY_DRAIN_SECONDS": "0"})  # no drain to wait for
    yield running
    assert running.stop() == 0


def test_a_run_within_its_slos_exits_0(gateway: Running) -> None:
    env = {"FANOUT_SCENARIO": "mix", "FANOUT_THINK_MIN_S": "0.1", "FANOUT_THINK_MAX_S": "0.2"}
    code, log = run_locust(gateway, env, "--slo-max-failure-ratio=0", "--slo-max-p99-ms=30000")
    assert "SLO met" in log, log
    assert code == 0, log


def test_a_run_missing_its_p99_exits_1_though_no_request_failed(gateway: Running) -> None:
    """locust alone would exit 0 here (nothing failed): the verdict is slo.py's."""
    env = {"FANOUT_SCENARIO": "slow", "FANOUT_SLOW_DELAY": "300ms"}
    code, log = run_locust(gateway, env, "--slo-max-failure-ratio=0", "--slo-max-p99-ms=100")
    assert "SLO missed: max-p99-ms" in log, log
    assert "max-failure-ratio" not in log, log
    assert code == 1, log
