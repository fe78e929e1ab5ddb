"""The cycle collector's young threshold (gateway/server/collector.py), side by side.

    python -m benchmarks.collector [--thresholds 700,7000,20000,100000] [--runs 3] [--seconds 4]

One gateway per fixed threshold, one with the gateway's own pacing (a base of 20,000 that
doubles while collections free nothing), and one with the collector off, all running at once
on core 1, measured in turn with wrk on core 0 as benchmarks/compare.py does: CPU us per
request (and p99) for the 1-call aggregation at 256 connections and the 3-call fan-out at 512
(a 20 ms backend), and the passthrough at 64.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from benchmarks.compare import (
    FANOUT,
    GATEWAY_ENV,
    LOAD_CPU,
    PROXY_CPU,
    Candidate,
    alternate,
    python,
    started,
)

RUN = (
    "import runpy, sys\n"
    "import gateway.server.collector as collector\n"
    "{setup}\n"
    "sys.argv = ['gateway', 'run', '--config', {config!r}, '--port', {port!r}]\n"
    "runpy.run_module('gateway', run_name='__main__')\n"
)


def gateway(name: str, config: Path, setup: str) -> Candidate:
    return Candidate(
        name,
        lambda port: [python(), "-c", RUN.format(setup=setup, config=str(config), port=str(port))],
        env=GATEWAY_ENV,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--thresholds", default="700,7000,20000,100000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as name:
        config = Path(name) / "fanout.yaml"
        upstream = Candidate(
            "upstream", lambda port: [python(), "-m", "benchmarks.upstream", "--port", str(port)]
        )
        with started(upstream, LOAD_CPU) as up:
            config.write_text(FANOUT.format(up=up.port))
            candidates = [
                gateway(
                    n,
                    config,
                    f"collector.YOUNG_THRESHOLD = collector.YOUNG_CEILING = {int(n)}",
                )
                for n in args.thresholds.split(",")
            ]
            candidates.append(gateway("paced", config, ""))
            off = "import gc\ncollector.pace_collector = gc.disable"
            candidates.append(gateway("off", config, off))
            cases = [("/one", 256), ("/three", 512), ("/pass/products/1", 64)]
            with ExitStack() as stack:
                systems = [stack.enter_context(started(c, PROXY_CPU)) for c in candidates]
                results = alternate(systems, cases, args, LOAD_CPU)
    print(
        f"CPU us per request by young threshold, medians of {args.runs} runs of {args.seconds:g} s"
    )
    print(f"  {'threshold':32s}" + "".join(f"{c.name:>9s}" for c in candidates))
    for path, connections in cases:
        label = f"{path} at {connections}"
        row = [results[(c.name, path, connections)][1] * 1e6 for c in candidates]
        print(f"  {label:32s}" + "".join(f"{v:9.0f}" for v in row))
    for path, connections in cases:
        label = f"p99 ms, {path} at {connections}"
        row = [results[(c.name, path, connections)][0].p99 * 1e3 for c in candidates]
        print(f"  {label:32s}" + "".join(f"{v:9.0f}" for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
