"""Command-line entry point shared by the demo services (`python -m services.<name>`)."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette


def serve(app: Starlette, name: str, default_port: int, argv: Sequence[str] | None = None) -> None:
    """Parse ``--host/--port/--fd`` and run `app` under uvicorn until interrupted."""
    parser = argparse.ArgumentParser(
        prog=f"python -m services.{name}", description=f"{name} demo service"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    # --fd lets a test harness bind the socket itself (e.g. port 0) and hand it over, which avoids
    # the race of picking a free port and hoping nobody grabs it before the service starts.
    parser.add_argument("--fd", type=int, default=None, help="serve on an already-bound socket fd")
    args = parser.parse_args(argv)
    if args.fd is None:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        return
    # Not uvicorn's own `fd=`: it wraps the fd as an AF_UNIX socket, so its connections never
    # get TCP_NODELAY and a response written in two parts waits ~40 ms for the client's
    # delayed ACK (Nagle). A socket object reads the family (AF_INET) from the fd itself.
    sock = socket.socket(fileno=args.fd)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
