"""`gateway demo` end to end: it starts, answers the curl lines it prints, and Ctrl-C stops
every process it started. The test runs it on a free base port (`--base-port`), so a demo
already running on the documented ports (8080, 8101-8105) is left alone."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from gateway.config.loader import load_config
from gateway.config.settings import EMBEDDED_DATABASE_URL
from gateway.devtools.demo import (
    DEFAULT_BASE_PORT,
    DEMO_CONFIG,
    demo_backend_urls,
    demo_data_dir,
    demo_pgdata,
    demo_ports,
)
from gateway.devtools.embedded_pg import unreachable_parent
from tests.processes import REPO, listening_socket


def free_base_port() -> int:
    """A port N such that N..N+6 are all free on 127.0.0.1 right now."""
    for _ in range(200):
        with listening_socket() as probe:
            base: int = probe.getsockname()[1]
        if base + 6 > 65535:
            continue
        taken = []
        for port in range(base, base + 7):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    taken.append(port)
        if not taken:
            return base
    raise AssertionError("no 7 free consecutive ports")


@pytest.fixture
def demo() -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    base = free_base_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--base-port", str(base)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    printed: list[str] = []
    for line in process.stdout:  # the demo prints its curl lines once everything listens
        printed.append(line)
        if "Ctrl-C stops everything" in line:
            break
    yield process, printed
    if process.poll() is None:
        process.kill()
        process.wait()
    process.stdout.close()
    # this base port's own database directory (the default one is the user's demo data)
    shutil.rmtree(demo_data_dir(demo_pgdata(base)), ignore_errors=True)


def test_demo_answers_its_curl_lines_and_stops_everything(
    demo: tuple[subprocess.Popen[str], list[str]],
) -> None:
    process, printed = demo
    started = any("Ctrl-C stops everything" in line for line in printed)
    assert started, "the demo did not start (its reason is on stderr): " + "".join(printed)
    children = psutil.Process(process.pid).children(recursive=True)
    assert len(children) >= 3  # services and the gateway

    lines = [line for line in printed if "curl" in line]
    urls = [re.search(r"(http://\S+?)'?(\s|$)", line) for line in lines]
    assert len(urls) >= 5
    writes: list[httpx.Response] = []
    with httpx.Client(timeout=30) as client:
        for line, match in zip(lines, urls, strict=True):
            assert match is not None
            url = match.group(1)
            data = re.search(r" -d '([^']*)'", line)
            if data is None:
                response = client.get(url)
            else:
                json_type = {"content-type": "application/json"}
                response = client.post(url, content=data.group(1), headers=json_type)
                writes.append(response)
            # some lines show errors on purpose (a timeout, a bad parameter): every answer is
            # JSON or a problem+json, never an internal error
            assert response.status_code != 500, (url, response.text)
            if response.status_code >= 400:
                assert response.headers["content-type"] == "application/problem+json", url
            elif "/metrics" not in url:
                assert response.headers["content-type"].startswith("application/"), url
        product = client.get(urls[0].group(1) if urls[0] else "").json()
        assert product["id"] == 42 and "author" in product and "reviews" in product
        # the write: an order placed, then one refused by the stock service's own 409
        placed, refused = writes
        assert placed.status_code == 200, placed.text
        order = placed.json()
        assert order["user_id"] == 7 and order["status"] == "placed"
        assert order["reservation"]["sku"] == 42 and order["reservation"]["quantity"] == 1
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"] == "only 3 left of sku 13"
        # its analytics event arrives after the answer: each check is a round trip
        events_url = next(m.group(1) for m in urls if m and m.group(1).endswith("/events"))
        for _ in range(1000):
            events = client.get(events_url).json()
            if events["count"] >= 1:
                break
        assert events["last"][0]["type"] == "order_created"
        assert events["last"][0]["order"] == order["id"]

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    _, alive = psutil.wait_procs(children, timeout=15)
    assert alive == [], f"left running: {alive}"


def test_demo_database_lives_where_postgres_can_reach_it(tmp_path: Path) -> None:
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    preferred = private / "checkout" / ".fanout" / "pgdata"
    chosen = demo_data_dir(preferred)
    assert unreachable_parent(chosen) is None
    # as root the server runs as `nobody`, who cannot enter a 0700 home: the demo moves out;
    # as a normal user the server runs as us and the checkout's own directory is kept
    assert (chosen != preferred) == (os.geteuid() == 0)
    assert demo_data_dir(preferred) == chosen  # the same checkout finds its data again


def test_a_busy_database_port_is_one_line() -> None:
    base = free_base_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 4))  # where the demo's PostgreSQL would listen
        squatter.listen()
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "demo", "--base-port", str(base)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"demo: port {base + 4} (postgres) is already in use; choose other ports with --base-port N"
    ]


def demo_backends(environment: dict[str, str]) -> dict[str, str]:
    """Each backend's address in examples/demo.yaml, loaded by the gateway's loader as the
    demo's gateway process does (`gateway demo` sets these variables, nothing else)."""
    environ = {"DATABASE_URL": EMBEDDED_DATABASE_URL, "JWT_SECRET": "k" * 32, "REDIS_URL": ""}
    backends = load_config(DEMO_CONFIG, environ={**environ, **environment}).data["backends"]
    return {
        name: backend.get("url") or backend["options"]["base_url"]
        for name, backend in backends.items()
        if "url" in backend or "base_url" in backend.get("options", {})
    }


@pytest.mark.parametrize("base", [DEFAULT_BASE_PORT, 40000])
def test_one_routes_file_reaches_the_services_on_any_base_port(base: int) -> None:
    """--base-port N moves the services; the variables it sets move the routes with them."""
    ports = demo_ports(base, base)
    services = ("catalog", "reviews", "users", "inventory")
    expected = {name: f"http://127.0.0.1:{ports[name]}" for name in services}
    assert demo_backends(demo_backend_urls(ports)) == expected


def test_without_the_variables_the_routes_are_the_default_demo_ports() -> None:
    """`gateway run --config examples/demo.yaml` (and the image's default CMD) without the
    variables: every default is the address of the demo service on the default base."""
    defaults = demo_backend_urls(demo_ports(DEFAULT_BASE_PORT, 8080))
    assert demo_backends({}) == demo_backends(defaults)
    assert demo_backends({}) == {
        "catalog": "http://127.0.0.1:8101",
        "reviews": "http://127.0.0.1:8102",
        "users": "http://127.0.0.1:8105",
        "inventory": "http://127.0.0.1:8103",
    }
