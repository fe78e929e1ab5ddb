"""The admin listener (`GATEWAY_ADMIN_PORT`): a second uvicorn server in the same process
and loop, serving the small operations app (/metrics, /readyz, /livez, /status), so the
public port that an ingress reaches does not expose them (Envoy's admin port, 9901).

It runs inside the main app's lifespan, so every worker of `--workers N` has one; their
sockets share the port with SO_REUSEPORT (the kernel spreads scrapes over them; /metrics
answers for the whole group either way). It never installs signal handlers: the main
server's drain owns SIGTERM, and the admin listener closes after it, when the lifespan
ends, so /readyz keeps answering 503 through the drain.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.types import ASGIApp

log = logging.getLogger("gateway.admin")


def admin_socket(host: str, port: int) -> socket.socket:
    """A listening socket on `host:port` that other workers may share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def serving_admin(app: ASGIApp, host: str, port: int) -> AsyncIterator[int]:
    """Serve `app` on `host:port` while the block runs; yields the bound port."""
    sock = admin_socket(host, port)
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,  # the main server configured logging already
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=1,
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    bound = sock.getsockname()[1]
    log.info("admin listener on %s:%d (/metrics, /readyz, /status)", host, bound)
    try:
        yield bound
    finally:
        server.should_exit = True
        await server.shutdown(sockets=[sock])
