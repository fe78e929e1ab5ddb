"""`gateway demo`: the demo services and the gateway as child processes, stopped together.

Every child is started by this process and stopped by PID on Ctrl-C or SIGTERM (SIGTERM
first, SIGKILL after a grace period), so nothing is left running.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from gateway.embedded_pg import EmbeddedPostgresError, database, unreachable_parent
from gateway.settings import EMBEDDED_DATABASE_URL
from services.userdb import prepare as prepare_userdb

REPO = Path(__file__).resolve().parent.parent
PGDATA = REPO / ".fanout" / "pgdata"  # survives demo restarts; .fanout/ is gitignored
EMBEDDED_PG_PORT = 8104  # the port of settings.EMBEDDED_DATABASE_URL
DEMO_CONFIG = REPO / "examples" / "demo.yaml"
STOP_GRACE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Service:
    """A demo process: its name, the port it listens on, and its command line."""

    name: str
    port: int
    argv: tuple[str, ...]


def demo_services(gateway_port: int, database_url: str = EMBEDDED_DATABASE_URL) -> list[Service]:
    python = sys.executable
    users = (python, "-m", "services.users", "--dsn", database_url, "--port", "8105")
    return [
        Service("users", 8105, users),
        Service("catalog", 8101, (python, "-m", "services.catalog", "--port", "8101")),
        Service("reviews", 8102, (python, "-m", "services.reviews", "--port", "8102")),
        Service("inventory", 8103, (python, "-m", "services.inventory", "--port", "8103")),
        Service(
            "gateway",
            gateway_port,
            (
                python,
                "-m",
                "gateway",
                "run",
                "--config",
                str(DEMO_CONFIG),
                "--port",
                str(gateway_port),
            ),
        ),
    ]


@contextmanager
def running(services: list[Service], startup_timeout: float = 30.0) -> Iterator[None]:
    """Start every service, wait until each accepts connections, stop them all on exit."""
    children: list[tuple[Service, subprocess.Popen[bytes]]] = []
    try:
        for service in services:
            children.append((service, subprocess.Popen(service.argv, cwd=REPO)))
            _wait_listening(service, children[-1][1], startup_timeout)
        yield
    finally:
        stop(child for _, child in reversed(children))


def stop(children: Iterator[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each child, then SIGKILL whatever has not exited after the grace period."""
    pending = list(children)
    for child in pending:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in pending:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _wait_listening(service: Service, child: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(
                f"demo: {service.name} exited with code {child.returncode} at start-up"
            )
        try:
            with socket.create_connection(("127.0.0.1", service.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)  # polling a port that is not open yet; not test synchronisation
    raise SystemExit(
        f"demo: {service.name} did not listen on port {service.port} within {timeout:g}s"
    )


def demo_data_dir(preferred: Path = PGDATA) -> Path:
    """Where the demo keeps its database: `.fanout/pgdata` in the checkout, unless we are root
    and PostgreSQL (run as `nobody`) could not reach it, as in a checkout under /root.

    The fallback under /var/tmp survives reboots like the checkout does, and is named after
    the checkout so two checkouts never share a database.
    """
    if unreachable_parent(preferred) is None:
        return preferred
    digest = hashlib.sha256(str(preferred.resolve()).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"fanout-demo-{digest}" / "pgdata"


def run_demo(gateway_port: int) -> int:
    """Run the demo stack until Ctrl-C or SIGTERM."""
    if not DEMO_CONFIG.exists():
        print(f"demo: {DEMO_CONFIG} not found: run `gateway demo` from a checkout", file=sys.stderr)
        return 1
    for service in demo_services(gateway_port):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", service.port)) == 0:
                print(
                    f"demo: port {service.port} ({service.name}) is already in use", file=sys.stderr
                )
                return 1

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    base = f"http://127.0.0.1:{gateway_port}"
    try:
        data_dir = demo_data_dir()
        if data_dir != PGDATA:
            print(
                f"demo: {PGDATA} is out of PostgreSQL's reach (it runs as nobody): "
                f"keeping the data in {data_dir}",
                flush=True,
            )
        with database(data_dir, EMBEDDED_PG_PORT) as database_url:
            print("demo: PostgreSQL ready; preparing the users and orders tables...", flush=True)
            asyncio.run(prepare_userdb(database_url))
            # the gateway expands `${DATABASE_URL}` in examples/demo.yaml from its environment
            os.environ["DATABASE_URL"] = database_url
            with running(demo_services(gateway_port, database_url)):
                _announce(base, database_url)
                signal.pause()
    except EmbeddedPostgresError as exc:
        print(f"demo: PostgreSQL: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: stopping...", flush=True)
    return 0


def _announce(base: str, database_url: str) -> None:
    print(
        f"\nfanout demo is up.\n"
        f"  gateway  {base}   (routes: {DEMO_CONFIG.relative_to(REPO)})\n"
        f"  catalog  http://127.0.0.1:8101\n"
        f"  reviews  http://127.0.0.1:8102\n"
        f"  users    http://127.0.0.1:8105\n"
        f"  database {database_url}\n\n"
        f"Try:\n"
        f"  curl -s {base}/api/products/42\n"
        f"  curl -s '{base}/api/products/42?delay=1500ms' -i   # author/reviews time out\n"
        f"  curl -s '{base}/api/products/42?fail=0.5' -i       # partial answers\n"
        f"  curl -s {base}/api/products/42/buy   # http + legacy (threads) + compute\n"
        f"  curl -s {base}/api/home\n"
        f"  curl -s {base}/api/users/7          # SQL (PostgreSQL) + HTTP in one fan-out\n"
        f"  curl -si {base}/api/users/abc       # a bad typed parameter: 400\n"
        f"  curl -sN '{base}/api/users-export?limit=5'   # NDJSON from a cursor\n"
        f"  curl -s {base}/api/catalog/products/7\n"
        f"  curl -s {base}/metrics | grep gateway_requests\n\n"
        f"Ctrl-C stops everything.",
        flush=True,
    )
