"""Command-line entry point shared by the demo services (`python -m services.<name>`)."""

from __future__ import annotations

import argparse
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
    uvicorn.run(app, host=args.host, port=args.port, fd=args.fd, log_level="warning")
