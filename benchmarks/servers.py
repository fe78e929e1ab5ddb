"""The server layer, side by side: the same apps under uvicorn and under granian.

    python -m benchmarks.servers [--runs 3] [--seconds 4] [--baseline DIR]

For the floor app (benchmarks/floor.py) and for fanout's own app, each served by
* uvicorn + httptools, as `gateway run` serves it (fanout: the gateway's protocol, with the
  client limits, connection counting and batched accepts; the floor: uvicorn's own),
* granian (`pip install granian`; its Rust HTTP/1 server, ASGI interface, uvloop, one
  worker, one runtime thread), with the app built by the factories below,
* and, with `--baseline DIR`, fanout from another checkout under its `gateway run`,
every system pinned to core 1 and measured in turn (wrk and the backend on core 0), as
benchmarks/compare.py does: req/s and CPU us per request (the server process and its
children, granian's Rust threads included) for the passthrough at 64 connections and the
1-call and 3-call aggregations at 256.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.compare import (
    FANOUT,
    GATEWAY_ENV,
    LOAD_CPU,
    PROXY_CPU,
    Candidate,
    alternate,
    fanouts,
    floor,
    python,
    started,
)


def floor_app() -> Any:
    """granian's factory for the floor (FLOOR_UPSTREAM: the backend's URL)."""
    from benchmarks.floor import create_app

    return create_app(os.environ["FLOOR_UPSTREAM"].rstrip("/"))


def fanout_app() -> Any:
    """granian's factory for fanout's app (GATEWAY_CONFIG: the routes file)."""
    from gateway.config.loader import load_spec
    from gateway.config.settings import Settings
    from gateway.server.collector import pace_collector
    from gateway.web.app import create_app

    settings = Settings()
    assert settings.config is not None, "GATEWAY_CONFIG names the routes file"
    pace_collector()  # as `gateway run` does: a like-for-like app process
    return create_app(load_spec(settings.config), settings)


def granian(name: str, factory: str, env: dict[str, str]) -> Candidate:
    def argv(port: int) -> list[str]:
        return [
            *(python(), "-m", "granian", "--interface", "asgi", "--loop", "uvloop"),
            *("--workers", "1", "--runtime-threads", "1", "--no-ws", "--factory"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
            *("--backlog", "2048", f"benchmarks.servers:{factory}"),
        ]

    return Candidate(name, argv, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--baseline", default=None, help="another fanout checkout, alongside")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        print("benchmarks.servers needs wrk (apt-get install wrk)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as name:
        config = Path(name) / "fanout.yaml"
        upstream = Candidate(
            "upstream", lambda port: [python(), "-m", "benchmarks.upstream", "--port", str(port)]
        )
        with started(upstream, LOAD_CPU) as up:
            config.write_text(FANOUT.format(up=up.port))
            uvicorn_floor = floor(up.port)
            candidates = [
                Candidate("floor uvicorn", uvicorn_floor.argv),
                granian(
                    "floor granian", "floor_app", {"FLOOR_UPSTREAM": f"http://127.0.0.1:{up.port}"}
                ),
            ]
            ours = fanouts(args, config)
            candidates.append(Candidate("fanout uvicorn", ours[0].argv, env=ours[0].env))
            candidates.append(
                granian(
                    "fanout granian", "fanout_app", {**GATEWAY_ENV, "GATEWAY_CONFIG": str(config)}
                )
            )
            candidates += ours[1:]
            cases = [("/pass/products/1", 64), ("/one", 256), ("/three", 256)]
            with ExitStack() as stack:
                systems = [stack.enter_context(started(c, PROXY_CPU)) for c in candidates]
                results = alternate(systems, cases, args, LOAD_CPU)
    print(f"server layer, {args.runs} runs of {args.seconds:g} s (medians): req/s, CPU us/request")
    print(f"  {'':16s}" + "".join(f"{f'{p} @{c}':>24s}" for p, c in cases))
    for candidate in candidates:
        cells = [results[(candidate.name, path, conns)] for path, conns in cases]
        print(
            f"  {candidate.name:16s}"
            + "".join(f"{load.rate:11.0f} {cpu * 1e6:9.0f} us " for load, cpu in cells)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
