"""Running the gateway under uvicorn (uvloop + httptools), with a drain period on SIGTERM.

Kubernetes removes a pod from its Service endpoints *in parallel* with sending SIGTERM, so a
process that stops accepting at once drops the requests still being routed to it. On the
first SIGTERM/SIGINT the gateway therefore: turns /readyz to 503, keeps accepting and serving
for `drain_seconds`, then lets uvicorn stop accepting and finish in-flight requests within
`graceful_timeout_seconds`, closes its pools in the lifespan and exits 0. A second signal
skips the rest of the drain period.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import signal
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from gateway.config.document import GatewaySpec
from gateway.config.loader import load_spec
from gateway.config.settings import Settings
from gateway.observability.logging import logging_config
from gateway.observability.multiprocess import group_metrics_directory
from gateway.server.accept import BatchAcceptServer
from gateway.server.collector import pace_collector
from gateway.server.limits import HttpLimits, LimitedConfig
from gateway.server.protocol import GatewayHttpProtocol
from gateway.server.workers import Workers, reuse_port_socket
from gateway.web.app import create_app
from gateway.web.health import Health

log = logging.getLogger("gateway.serve")


class DrainingServer(BatchAcceptServer):
    """uvicorn's Server with a drain period between the signal and the shutdown."""

    def __init__(
        self,
        config: uvicorn.Config,
        health: Health,
        drain_seconds: float,
        reload: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.health = health
        self.drain_seconds = drain_seconds
        self.reload = reload
        self._drain_started = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        if self.reload is not None:
            # SIGHUP reloads the routes file (gateway/web/runtime.py); its default would end
            # the process
            self._loop.add_signal_handler(signal.SIGHUP, self.reload)
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not calling super(): it records the signal and re-raises it after shutdown, which
        # would end the process by signal instead of exit code 0.
        self.health.state = "draining"
        if self._drain_started or self._loop is None or self.drain_seconds <= 0:
            self.should_exit = True
            return
        self._drain_started = True
        log.info("draining: /readyz is 503, serving for %.1fs more", self.drain_seconds)
        self._loop.call_soon_threadsafe(
            self._loop.call_later, self.drain_seconds, self._finish_drain
        )

    def _finish_drain(self) -> None:
        log.info("drain period over: closing the listener, finishing in-flight requests")
        self.should_exit = True


def uvicorn_config(app: object, settings: Settings) -> uvicorn.Config:
    """The uvicorn settings tuned for many concurrent connections, with the client limits."""
    return LimitedConfig(
        app,
        http_limits=HttpLimits.from_settings(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=GatewayHttpProtocol,
        lifespan="on",
        backlog=settings.backlog,
        timeout_keep_alive=int(settings.keep_alive_seconds),
        timeout_graceful_shutdown=int(settings.graceful_timeout_seconds),
        server_header=False,
        # one rule for forwarding headers, the gateway's own (gateway/web/forwarding.py):
        # uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1
        proxy_headers=False,
        log_level=settings.log_level,
        log_config=logging_config(settings.log_level, settings.log_format),
        access_log=False,  # per-request logging costs ~15% throughput; metrics carry the counts
        workers=1,  # several workers are gateway/server/workers.py's, not uvicorn's
    )


def serve(spec: GatewaySpec, settings: Settings, fd: int | None = None) -> int:
    """Serve until a signal; returns the exit code after a clean shutdown (0).

    `fd` is an inherited listening socket (tests, benchmarks). It is adopted as it is rather
    than through uvicorn's `fd=`, which wraps it as a Unix socket: its connections would then
    miss TCP_NODELAY and every small response would wait ~40 ms for a delayed ACK. Adopted,
    the server owns the one descriptor, so closing the listener at shutdown really closes it.
    With `--workers N` every worker runs this same server (gateway/server/workers.py).
    """
    inherited = socket.socket(fileno=fd) if fd is not None else None
    if settings.workers > 1:
        if settings.config is None:
            raise RuntimeError("workers load the routes file by path: GATEWAY_CONFIG is unset")
        overrides = {
            "host": settings.host,
            "port": settings.port,
            "workers": 1,
            "config": settings.config,
            "watch": settings.watch,
        }
        # the supervisor logs like a worker does (its own steps: start, stop, replace)
        logging.config.dictConfig(logging_config(settings.log_level, settings.log_format))
        workers = Workers(settings.workers, run_worker, overrides, inherited)
        # before the workers start: they sum their metrics through this directory
        with group_metrics_directory(settings.prometheus_multiproc_dir):
            return workers.run(settings.drain_seconds, settings.graceful_timeout_seconds)
    serve_one(spec, settings, inherited)
    return 0


def run_worker(overrides: dict[str, Any], shared: socket.socket | None) -> None:
    """One worker process of `--workers N`: its settings, its own SO_REUSEPORT socket (or
    the shared inherited one), and the same server as a single process."""
    settings = Settings(**overrides)
    assert settings.config is not None, "the supervisor sets the routes file"
    sock = shared or reuse_port_socket(settings.host, settings.port, settings.backlog)
    serve_one(load_spec(settings.config), settings, sock)


def serve_one(spec: GatewaySpec, settings: Settings, sock: socket.socket | None) -> None:
    """One process's server: the app, batched accepts, the drain on SIGTERM."""
    pace_collector()
    app = create_app(spec, settings)
    server = DrainingServer(
        uvicorn_config(app, settings),
        app.state.health,
        settings.drain_seconds,
        reload=lambda: app.state.reload(),  # the lifespan sets it once serving
    )
    server.run(sockets=[sock] if sock is not None else None)
