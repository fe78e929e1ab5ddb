"""The system under test: demo services and one gateway process on ephemeral ports.

Sockets are bound here (port 0) and handed to each child with `--fd`, so a capacity run never
collides with a `gateway demo` or a test suite running on the same machine. The routes file
is copied with each demo backend's URL pointed at the port its service got. Every child is
stopped by PID (SIGTERM, then SIGKILL after a grace period).

When the routes file has a `postgres` backend or the `users` service, a seeded PostgreSQL is
needed: DATABASE_URL when it is set (nothing is started, as in the test suite), else an
embedded one (gateway/embedded_pg.py) in a temporary directory, seeded by services/userdb.py
and removed afterwards. The gateway gets it as DATABASE_URL (`dsn: ${DATABASE_URL}`), the
users service as `--dsn`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.devtools.embedded_pg import scratch_database
from services.userdb import prepare as prepare_userdb
from tests.processes import listening_socket

REPO = Path(__file__).resolve().parent.parent
# Backends of the routes file that this runner can start: name -> module under services/.
DEMO_SERVICES = {
    "catalog": "services.catalog",
    "reviews": "services.reviews",
    "users": "services.users",  # needs the database: started with --dsn
}
NEEDS_DATABASE = frozenset({"users"})
STOP_GRACE_S = 30.0
GATEWAY_BACKLOG = 4096  # the listen queue of the gateway socket (GATEWAY_BACKLOG's default)


@dataclass(frozen=True, slots=True)
class Stack:
    """A running stack: where the gateway listens and its PID (for RSS sampling)."""

    url: str
    gateway_pid: int
    backend_ports: dict[str, int]
    routes: Path
    database: str | None = None  # the DSN, when the routes needed one


def stop_process(process: subprocess.Popen[bytes], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM, wait up to `grace`, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _start(
    argv: list[str], log: Path, env: Mapping[str, str], backlog: int
) -> tuple[subprocess.Popen[bytes], int]:
    sock = listening_socket(backlog)
    fd = sock.fileno()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*argv, "--fd", str(fd)],
            pass_fds=(fd,),
            cwd=REPO,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    port: int = sock.getsockname()[1]
    sock.close()  # only the child holds it now: if it dies, clients are refused at once
    return process, port


def _routes_for(config: Path, ports: Mapping[str, int], out: Path) -> Path:
    routes: dict[str, Any] = yaml.safe_load(config.read_text(encoding="utf-8"))
    for name, port in ports.items():
        routes["backends"][name]["url"] = f"http://127.0.0.1:{port}"
    path = out / "routes.yaml"
    path.write_text(
        f"# {config.name} with the demo backends on this run's ports\n"
        + yaml.safe_dump(routes, sort_keys=False),
        encoding="utf-8",
    )
    return path


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with code {process.returncode} at start-up")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)  # start-up poll of a process that is still loading
    raise RuntimeError(f"the gateway was not ready within {timeout:g}s")


@contextmanager
def seeded_database() -> Iterator[str]:
    """DATABASE_URL when set, else an embedded PostgreSQL in a temporary directory; seeded."""
    with scratch_database("fanout-loadtest-pg-") as dsn:
        asyncio.run(prepare_userdb(dsn))
        yield dsn


def _needs_database(spec: Mapping[str, Any]) -> bool:
    backends: Mapping[str, Any] = spec.get("backends", {})
    return any(
        b.get("kind") == "postgres" or name in NEEDS_DATABASE for name, b in backends.items()
    )


@contextmanager
def running_stack(config: Path, gateway_env: Mapping[str, str], out: Path) -> Iterator[Stack]:
    """Start the database and demo services the routes file needs, then the gateway; stop
    all on exit."""
    spec: dict[str, Any] = yaml.safe_load(config.read_text(encoding="utf-8"))
    names = [n for n in spec.get("backends", {}) if n in DEMO_SERVICES]
    with ExitStack() as cleanup:
        dsn = cleanup.enter_context(seeded_database()) if _needs_database(spec) else None
        ports: dict[str, int] = {}
        for name in names:
            argv = [sys.executable, "-m", DEMO_SERVICES[name]]
            if name in NEEDS_DATABASE and dsn is not None:
                argv += ["--dsn", dsn]
            # uvicorn listens again with its default backlog, 2048: above the 2,000
            # connections (max_connections) the gateway may open to one service at once
            process, ports[name] = _start(argv, out / f"{name}.log", {}, 2048)
            cleanup.callback(stop_process, process)
        routes = _routes_for(config, ports, out)
        env = {
            # no drain period on the way out: nothing routes to this gateway but this run
            "GATEWAY_DRAIN_SECONDS": "0",
            **gateway_env,
            **({"DATABASE_URL": dsn} if dsn is not None else {}),
        }
        gateway, port = _start(
            [sys.executable, "-m", "gateway", "run", "--config", str(routes)],
            out / "gateway.log",
            env,
            int(gateway_env.get("GATEWAY_BACKLOG", GATEWAY_BACKLOG)),
        )
        cleanup.callback(stop_process, gateway)
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, gateway)
        yield Stack(
            url=url, gateway_pid=gateway.pid, backend_ports=ports, routes=routes, database=dsn
        )
