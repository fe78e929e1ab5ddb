"""The seams end to end: a backend kind added from outside the gateway (an entry point)
serves a routes file; every error answer carries X-Request-ID, and a request that raises is
a 500 whose log line names the same id."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import REPO, Running, start_gateway

ENTRY_POINTS = """[fanout.backend_kinds]
echo = tests.echo_kind:KIND
"""

CONFIG = """
version: 1
backends:
  parrot: {{kind: echo, greeting: "hi there", timeout: 1s}}
  catalog: {{kind: http, url: "{catalog}", timeout: 2s}}
endpoints:
  - path: /talk/{{word}}
    calls:
      - {{name: said, backend: parrot, args: {{word: "{{word}}", lang: "{{query.lang}}"}}, group: said}}
      - {{name: product, backend: catalog, path: /products/1, allow: [id], group: product}}
  - path: /crash
    calls:
      - {{name: boom, backend: parrot, args: {{crash: "yes"}}}}
  - path: /submit
    method: POST
    max_body: 1KiB
    calls:
      - {{name: said, backend: parrot, args: {{word: "posted"}}}}
  - path: /needs-product
    calls:
      - {{name: product, backend: catalog, path: /products/1, query: {{status: "500"}}, required: true}}
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the distribution metadata of a package that declares the echo kind."""
    root = tmp_path_factory.mktemp("plugin")
    info = root / "fanout_test_echo-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fanout-test-echo\nVersion: 0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


@pytest.fixture(scope="module")
def gateway(
    catalog: Running, plugin_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Running, Path]]:
    work = tmp_path_factory.mktemp("seams")
    config = work / "gateway.yaml"
    config.write_text(CONFIG.format(catalog=catalog.url))
    log_path = work / "gateway.log"
    with log_path.open("wb") as log:
        running = start_gateway(config, env={"PYTHONPATH": str(plugin_path)}, stderr=log)
        yield running, log_path
        assert running.stop() == 0


def test_a_kind_from_an_entry_point_serves_its_calls(gateway: tuple[Running, Path]) -> None:
    running, _ = gateway
    with httpx.Client(base_url=running.url, timeout=10) as http:
        response = http.get("/talk/polly", params={"lang": "pt"})
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-complete"] == "true"
    body = response.json()
    assert body["said"] == {"greeting": "hi there", "args": {"word": "polly", "lang": "pt"}}
    assert body["product"] == {"id": 1}


def test_a_request_that_raises_is_a_500_logged_once_with_its_request_id(
    gateway: tuple[Running, Path],
) -> None:
    running, log_path = gateway
    with httpx.Client(base_url=running.url, timeout=10) as http:
        response = http.get("/crash", headers={"X-Request-ID": "crash-probe-1"})
        assert http.get("/livez").status_code == 200  # the process goes on
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "crash-probe-1"
    assert "crash-probe-1" in response.json()["detail"]
    log = log_path.read_text()
    lines = [line for line in log.splitlines() if "crash-probe-1" in line]
    assert len(lines) == 1, log
    assert "internal error" in lines[0]
    assert log.count("RuntimeError: the echo kind was told to crash") == 1, log


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/nowhere", b"", 404),
        ("DELETE", "/crash", b"", 405),
        ("POST", "/submit", b"x" * 2048, 413),
        ("GET", "/talk/%2e%2e", b"", 400),
        ("GET", "/needs-product", b"", 502),
    ],
)
def test_every_error_answer_carries_the_request_id(
    gateway: tuple[Running, Path], method: str, path: str, body: bytes, status: int
) -> None:
    running, _ = gateway
    with httpx.Client(base_url=running.url, timeout=10) as http:
        response = http.request(method, path, content=body, headers={"X-Request-ID": "err-probe"})
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"] == "err-probe"
    assert response.headers["content-type"] == "application/problem+json"


def check(config: Path, plugin_path: Path) -> subprocess.CompletedProcess[str]:
    """`gateway check` in a process that sees the echo kind's entry point."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(config)],
        cwd=REPO,
        env={"PYTHONPATH": str(plugin_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_check_knows_the_kind_and_its_fields(plugin_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "echo.yaml"
    config.write_text(
        "version: 1\nbackends:\n  parrot: {kind: echo, greting: x}\n"
        "endpoints: [{path: /a, calls: [{backend: parrot, path: /p}]}]\n"
    )
    done = check(config, plugin_path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{config}: backends.parrot.greting: unknown field (did you mean 'greeting'?)"
    ]
    config.write_text(
        "version: 1\nbackends:\n  parrot: {kind: echo}\n"
        "endpoints: [{path: /a, calls: [{backend: parrot, path: /p}]}]\n"
    )
    assert check(config, plugin_path).stderr.splitlines() == [
        f"{config}: endpoints[0].calls[0].path: not used by an echo backend ('parrot'): "
        "only http backends' calls take `path`"
    ]
    config.write_text(
        "version: 1\nbackends:\n  parrot: {kind: echo}\n"
        "endpoints: [{path: /a, calls: [{backend: parrot, args: {x: '{y}'}}]}]\n"
    )
    done = check(config, plugin_path)
    assert done.stderr.splitlines() == [
        f"{config}: endpoints[0].calls[0].args.x: {{y}}: the endpoint path has no parameter 'y'"
    ]
