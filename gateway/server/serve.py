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
import copy
import logging
import socket
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import LOG_LEVELS, LOGGING_CONFIG
from uvicorn.supervisors import Multiprocess

from gateway.config.document import GatewaySpec
from gateway.config.loader import load_spec
from gateway.config.settings import Settings
from gateway.server.accept import BatchAcceptServer
from gateway.server.limits import HttpLimits, LimitedConfig
from gateway.server.protocol import GatewayHttpProtocol
from gateway.web.app import create_app
from gateway.web.health import Health

log = logging.getLogger("gateway.serve")


class DrainingServer(BatchAcceptServer):
    """uvicorn's Server with a drain period between the signal and the shutdown."""

    def __init__(self, config: uvicorn.Config, health: Health, drain_seconds: float) -> None:
        super().__init__(config)
        self.health = health
        self.drain_seconds = drain_seconds
        self._drain_started = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
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


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, plus the `gateway.*` loggers on the same handler and level.

    Without it they have no handler, and Python prints only their warnings: the drain and
    shutdown steps (which a pod's log should show) would be lost.
    """
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["gateway"] = {
        "handlers": ["default"],
        "level": LOG_LEVELS[level.lower()],
        "propagate": False,
    }
    return config


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
        log_config=log_config(settings.log_level),
        access_log=False,  # per-request logging costs ~15% throughput; metrics carry the counts
        workers=settings.workers,
        factory=isinstance(app, str),
    )


def serve(spec: GatewaySpec, settings: Settings, fd: int | None = None) -> None:
    """Serve until a signal; returns after a clean shutdown.

    `fd` is an inherited listening socket (tests, benchmarks). It is adopted as it is rather
    than through uvicorn's `fd=`, which wraps it as a Unix socket: its connections would then
    miss TCP_NODELAY and every small response would wait ~40 ms for a delayed ACK. Adopted,
    the server owns the one descriptor, so closing the listener at shutdown really closes it.
    """
    inherited = [socket.socket(fileno=fd)] if fd is not None else None
    if settings.workers > 1:
        # Each worker is a separate process that loads the routes file itself (by path, from
        # GATEWAY_CONFIG) through `app_from_settings`. The drain period applies per process
        # only with one worker; on Kubernetes run one worker per pod and scale by replicas.
        config = uvicorn_config("gateway.server.serve:app_from_settings", settings)
        Multiprocess(config, sockets=inherited or [config.bind_socket()]).run()
        return
    app = create_app(spec, settings)
    server = DrainingServer(uvicorn_config(app, settings), app.state.health, settings.drain_seconds)
    server.run(sockets=inherited)


def app_from_settings() -> object:
    """App factory for worker processes: the routes file comes from GATEWAY_CONFIG."""
    settings = Settings()
    if settings.config is None:
        raise RuntimeError("GATEWAY_CONFIG is not set")
    return create_app(load_spec(settings.config), settings)
