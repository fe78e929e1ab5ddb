"""Where a request's CPU goes: py-spy over a system under load, in CPU us per request by layer.

    python -m benchmarks.profile [--system fanout|floor|baseline] [--path /three]
                                 [--connections 256] [--seconds 10] [--baseline DIR] [--top 30]

Starts the backend (benchmarks/upstream.py) and the system as benchmarks/compare.py does
(the system pinned to core 1, wrk and the backend to core 0), loads `--path` with wrk and
records the system with py-spy (`pip install py-spy`; it needs ptrace rights over the
process: root, or `kernel.yama.ptrace_scope=0`). Each sample is charged to the innermost
Python frame (C code such as uvloop or orjson to the frame that called it) and the layers
are scaled to the process's measured CPU per request, so the table reads like the issue-17
profile: Starlette, fanout's own code, aiohttp (with yarl and multidict), asyncio/uvloop,
uvicorn (with httptools), prometheus-client. The `--top` innermost functions follow.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from benchmarks.compare import (
    FANOUT,
    LOAD_CPU,
    PROXY_CPU,
    Candidate,
    fanouts,
    floor,
    python,
    started,
    wrk,
)

LAYERS = (
    ("prometheus-client", ("prometheus_client/",)),
    ("Starlette", ("starlette/",)),
    ("uvicorn", ("uvicorn/", "httptools/")),
    ("aiohttp", ("aiohttp/", "yarl/", "multidict/")),
    ("asyncio/uvloop", ("asyncio/", "uvloop/")),
    ("own code", ("gateway/", "benchmarks/floor.py")),
)
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?P<line>:\d+)?\)$")


def layer_of(path: str) -> str:
    for name, needles in LAYERS:
        if any(needle in path for needle in needles):
            return name
    return "other (stdlib...)"


def innermost(raw: Path) -> collections.Counter[tuple[str, str]]:
    """Samples by innermost (function, file) from py-spy's raw (collapsed) output."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        leaf = stack.rsplit(";", 1)[-1]
        match = _FRAME.match(leaf)
        if match is None:
            function, file = leaf, "?"
        else:
            function, file = match["function"], match["file"] + (match["line"] or "")
        counts[(function, file)] += int(count)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--system", default="fanout", choices=("fanout", "floor", "baseline"))
    parser.add_argument("--path", default="/three")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--baseline", default=None, help="the checkout `--system baseline` runs")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--lines", action="store_true", help="innermost lines rather than functions"
    )
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists() or not shutil.which("wrk"):
        print("benchmarks.profile needs py-spy (pip install py-spy) and wrk", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        upstream = Candidate(
            "upstream", lambda port: [python(), "-m", "benchmarks.upstream", "--port", str(port)]
        )
        with started(upstream, LOAD_CPU) as up:
            config = tmp / "fanout.yaml"
            config.write_text(FANOUT.format(up=up.port))
            if args.system == "floor":
                candidate = floor(up.port)
            else:
                candidate = {c.name: c for c in fanouts(args, config)}[args.system]
            with started(candidate, PROXY_CPU) as system:
                url = f"http://127.0.0.1:{system.port}{args.path}"
                wrk(url, args.connections, 2.0)  # warm-up
                raw = tmp / "profile.txt"
                spy_argv = [
                    *(spy, "record", "--pid", str(system.process.pid)),
                    *("--rate", str(args.rate), "--duration", f"{args.seconds:g}"),
                    *("--format", "raw", "--full-filenames", "--nonblocking"),
                    *(() if args.lines else ("--function",)),
                    *("--output", str(raw)),
                ]
                recorder = threading.Thread(
                    target=subprocess.run,
                    args=(spy_argv,),
                    kwargs={"check": True, "capture_output": True},
                )
                before = system.cpu_seconds()
                recorder.start()
                load = wrk(url, args.connections, args.seconds)
                used = system.cpu_seconds() - before
                recorder.join()
        counts = innermost(raw)
    total = sum(counts.values()) or 1
    per_request = used / max(1, load.requests) * 1e6
    print(
        f"{args.system} {args.path} at {args.connections} connections: {load.rate:.0f} req/s, "
        f"{per_request:.0f} CPU us/request ({total} samples)"
    )
    layers: collections.Counter[str] = collections.Counter()
    for (_, file), count in counts.items():
        layers[layer_of(file)] += count
    for layer, count in layers.most_common():
        print(f"  {layer:20s} {count / total * per_request:6.0f} us  {count / total:6.1%}")
    print(f"innermost functions (top {args.top}):")
    for (function, file), count in counts.most_common(args.top):
        short = re.sub(r".*/(site-packages|lib/python3\.\d+)/", "", file)
        short = re.sub(r".*/(gateway|benchmarks)/", r"\1/", short)
        print(f"  {count / total * per_request:6.1f} us  {function:36s} {short}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
