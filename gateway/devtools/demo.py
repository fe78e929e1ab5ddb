"""`gateway demo`: the demo services and the gateway as child processes, stopped together.

Every child is started by this process and stopped by PID on Ctrl-C or SIGTERM (SIGTERM
first, SIGKILL after a grace period), so nothing is left running. The services listen on
the ports after a base port (8100 by default: catalog 8101, reviews 8102, inventory 8103,
PostgreSQL 8104, users 8105, Redis 8106), so a second demo, or a test run beside one, can choose
another base (`--base-port`). The product never imports this package or the services.
"""

from __future__ import annotations

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

from gateway.config.settings import EMBEDDED_DATABASE_URL
from gateway.devtools.demo_token import demo_secret, mint
from gateway.devtools.embedded_pg import database, unreachable_parent
from gateway.devtools.embedded_redis import redis_server
from gateway.errors import DevServerError

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".fanout"  # survives demo restarts; .fanout/ is gitignored
PGDATA = STATE / "pgdata"
DEMO_CONFIG = REPO / "examples" / "demo.yaml"
DEFAULT_BASE_PORT = 8100
STOP_GRACE_SECONDS = 10.0
OFFSETS = {"catalog": 1, "reviews": 2, "inventory": 3, "postgres": 4, "users": 5, "redis": 6}
"""Each demo process's port, as an offset from the base port."""
BACKEND_URLS = {
    "catalog": "CATALOG_URL",
    "reviews": "REVIEWS_URL",
    "users": "USERS_URL",
    "inventory": "INVENTORY_URL",
}
"""The variable each demo service's address is read from in examples/demo.yaml."""


@dataclass(frozen=True, slots=True)
class Service:
    """A demo process: its name, the port it listens on, and its command line."""

    name: str
    port: int
    argv: tuple[str, ...]


def demo_ports(base: int, gateway: int) -> dict[str, int]:
    """Every port the demo listens on, by process name."""
    return {"gateway": gateway, **{name: base + offset for name, offset in OFFSETS.items()}}


def demo_backend_urls(ports: dict[str, int]) -> dict[str, str]:
    """The environment that points the routes file's backends at services on `ports`: each
    backend address in examples/demo.yaml is `${CATALOG_URL:-http://127.0.0.1:8101}` style,
    so one file serves every base port (and, with cluster URLs, Kubernetes)."""
    return {variable: f"http://127.0.0.1:{ports[name]}" for name, variable in BACKEND_URLS.items()}


def demo_services(ports: dict[str, int], database_url: str, config: Path) -> list[Service]:
    python = sys.executable

    def service(name: str, module: str, *extra: str) -> Service:
        port = ports[name]
        return Service(name, port, (python, "-m", module, *extra, "--port", str(port)))

    return [
        service("users", "services.users", "--dsn", database_url),
        service("catalog", "services.catalog"),
        service("reviews", "services.reviews"),
        service("inventory", "services.inventory"),
        Service(
            "gateway",
            ports["gateway"],
            (
                python,
                "-m",
                "gateway",
                "run",
                "--config",
                str(config),
                "--port",
                str(ports["gateway"]),
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


def demo_pgdata(base: int) -> Path:
    """The demo database's directory for services on `base`: one per base port, so two
    demos never share (or stop) one server."""
    return PGDATA if base == DEFAULT_BASE_PORT else STATE / f"pgdata-{base}"


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


def run_demo(gateway_port: int | None, base_port: int | None) -> int:
    """Run the demo stack until Ctrl-C or SIGTERM: the gateway on `gateway_port` (default:
    8080, or the base port when one is given), the services on the ports after the base."""
    if not DEMO_CONFIG.exists():
        print(f"demo: {DEMO_CONFIG} not found: run `gateway demo` from a checkout", file=sys.stderr)
        return 1
    base = DEFAULT_BASE_PORT if base_port is None else base_port
    ports = demo_ports(base, gateway_port or (8080 if base_port is None else base_port))
    busy = [name for name, port in ports.items() if _in_use(port)]
    if busy:
        for name in busy:
            print(
                f"demo: port {ports[name]} ({name}) is already in use; "
                "choose other ports with --base-port N",
                file=sys.stderr,
            )
        return 1

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    try:
        preferred = demo_pgdata(base)
        data_dir = demo_data_dir(preferred)
        if data_dir != preferred:
            print(
                f"demo: {preferred} is out of PostgreSQL's reach (it runs as nobody): "
                f"keeping the data in {data_dir}",
                flush=True,
            )
        config = DEMO_CONFIG
        # the gateway expands `${CATALOG_URL:-...}` (and the others) from its environment
        os.environ.update(demo_backend_urls(ports))
        with database(data_dir, ports["postgres"]) as database_url:
            print("demo: PostgreSQL ready; preparing the users and orders tables...", flush=True)
            _prepare_database(database_url)
            # the gateway expands `${DATABASE_URL}` in the routes file from its environment
            os.environ["DATABASE_URL"] = database_url
            os.environ["JWT_SECRET"] = demo_secret()  # the protected endpoint's tokens
            with redis_server(ports["redis"]) as redis_url:
                os.environ["REDIS_URL"] = redis_url  # rate limits shared through it
                with running(demo_services(ports, database_url, config)):
                    _announce(gateway, ports, database_url, config)
                    _announce_protected(gateway, config, database_url)
                    signal.pause()
    except DevServerError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: stopping...", flush=True)
    return 0


def _in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _prepare_database(database_url: str) -> None:
    """Create and seed the demo tables (idempotent), as the users service's own tool does."""
    done = subprocess.run(
        [sys.executable, "-m", "services.userdb", "--dsn", database_url], cwd=REPO, check=False
    )
    if done.returncode != 0:
        raise DevServerError(f"preparing the demo tables failed (exit code {done.returncode})")


def _announce(base: str, ports: dict[str, int], database_url: str, config: Path) -> None:
    print(
        f"\nfanout demo is up.\n"
        f"  gateway  {base}   (routes: {config.relative_to(REPO)})\n"
        f"  catalog  http://127.0.0.1:{ports['catalog']}\n"
        f"  reviews  http://127.0.0.1:{ports['reviews']}\n"
        f"  users    http://127.0.0.1:{ports['users']}\n"
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
        f"  curl -s {base}/api/orders -H 'content-type: application/json'"
        f' -d \'{{"user_id": 7, "sku": 42, "quantity": 1}}\'   # a write\n'
        f"  curl -si {base}/api/orders -H 'content-type: application/json'"
        f' -d \'{{"user_id": 7, "sku": 13, "quantity": 5}}\'   # 409: 3 in stock\n'
        f"  curl -s http://127.0.0.1:{ports['users']}/events   # the orders' background events\n"
        f"  curl -s {base}/metrics | grep gateway_requests",
        flush=True,
    )


def _announce_protected(base: str, config: Path, database_url: str) -> None:
    """How to call the protected endpoint: a token minted now, and how to make an API key."""
    token = mint("7", ["profile:read"])
    routes = config.relative_to(REPO)
    # `gateway keys` expands the routes' ${DATABASE_URL} as the gateway does
    env = "" if database_url == EMBEDDED_DATABASE_URL else f"DATABASE_URL={database_url} "
    print(
        f"\nThe protected endpoint (JWT or API key, 5 requests/s per user, limits in Redis):\n"
        f"  curl -si {base}/api/me                 # no credential: 401\n"
        f"  curl -s {base}/api/me -H 'Authorization: Bearer {token}'\n"
        f"  python -m gateway.devtools.demo_token --sub 7   # mint another token\n"
        f"  {env}gateway keys create --config {routes} --auth partners --name 7 "
        f"--scope profile:read\n"
        f"  curl -s {base}/api/me -H 'x-api-key: <the key printed>'\n\n"
        f"Ctrl-C stops everything.",
        flush=True,
    )
