"""fanout against nginx, haproxy and the "floor" (benchmarks/floor.py), side by side in one run.

    python -m benchmarks.compare [--seconds 8] [--runs 3] [--only passthrough,aggregation,workers]
                                 [--baseline DIR]

Every system is started here, on 127.0.0.1 ephemeral ports, and stopped by PID at the end:
nginx and haproxy when installed (`apt-get install nginx haproxy wrk`), the floor app, fanout,
and the backend (benchmarks/upstream.py). On a 2-core machine each proxy is pinned to core 1
(`taskset`), wrk and the backend to core 0, so a proxy's CPU time per request is its own.
The systems of a section all run at once (an idle one costs nothing) and are measured in
turn, run after run, so a drift in the machine's load hits every one alike; figures are
medians of `--runs` runs of `--seconds` each:

* passthrough of a ~300-byte JSON at 64 connections: req/s, CPU us/request, and / nginx;
* aggregation against a 20 ms backend: one call and a 3-call fan-out at 256 connections
  (req/s, CPU us/request, fanout / floor), and the latency ratio 3 calls / 1 call at 10;
* `--workers 2` against 1 worker (unpinned), 3-call fan-out at 64 and 512 connections: req/s
  and p99. Its backend is nginx answering the same JSON at once from memory when nginx is
  installed: two workers need both cores, and the Python backend's CPU for three calls per
  request would take a share of them that no number of workers gets back (the backend, not
  the gateway, would be measured); without nginx, benchmarks/upstream.py without delay.

The floor asks the backend exactly what fanout's endpoints ask (the same paths, the same
20 ms delay) and answers the same merged JSON. `--baseline DIR` adds another checkout of
fanout (say, main's: `git archive HEAD | tar -x -C DIR`), run from DIR with this Python, as
one more system: a before/after figure measured side by side.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
PROXY_CPU, LOAD_CPU = "1", "0"

FANOUT = """
version: 1
backends:
  up: {{kind: http, url: "http://127.0.0.1:{up}", timeout: 5s, max_connections: 1024}}
endpoints:
  - path: /pass/{{rest:path}}
    proxy: {{backend: up, path: "/{{rest}}"}}
  - path: /one
    timeout: 10s
    calls:
      - {{name: a, backend: up, path: /products/1, query: {{delay: "20"}}, group: a}}
  - path: /three
    timeout: 10s
    calls:
      - {{name: a, backend: up, path: /products/1, query: {{delay: "20"}}, group: a}}
      - {{name: b, backend: up, path: /products/2, query: {{delay: "20"}}, group: b}}
      - {{name: c, backend: up, path: /products/3, query: {{delay: "20"}}, group: c}}
"""

NGINX = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log stderr error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream up {{ server 127.0.0.1:{up}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location /pass/ {{
            proxy_pass http://up/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

HAPROXY = """
global
    nbthread 1
    maxconn 8192
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend front
    bind 127.0.0.1:{port}
    http-request replace-path /pass(/.*) \\1
    default_backend up
backend up
    server one 127.0.0.1:{up}
"""

NGINX_BACKEND = """
worker_processes 1;
daemon off;
pid {tmp}/nginx-backend.pid;
error_log stderr error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
}}
"""

# "error": a saturated gateway pinned to one core logs loop-lag warnings by the hundred
GATEWAY_ENV = {"GATEWAY_LOG_LEVEL": "error", "GATEWAY_MAX_IN_FLIGHT": "100000"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Candidate:
    """A system to start: its name, its command line for a port, where it runs."""

    name: str
    argv: Callable[[int], list[str]]
    cwd: Path = REPO
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class System:
    """A started process (and its children) serving on `port`."""

    name: str
    process: subprocess.Popen[bytes]
    port: int

    def cpu_seconds(self) -> float:
        try:
            parent = psutil.Process(self.process.pid)
            procs = [parent, *parent.children(recursive=True)]
            return sum(sum(p.cpu_times()[:2]) for p in procs)
        except psutil.NoSuchProcess:
            return 0.0


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"a benchmark process exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # polling a port that is not open yet, not test synchronisation
    raise RuntimeError(f"nothing listens on {port}")


def wait_workers_listening(system: System, workers: int, timeout: float = 60) -> None:
    """Until `workers` processes of the system's tree listen on its port (`--workers N`:
    each worker binds its own SO_REUSEPORT socket, the first one open is not all of them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parent = psutil.Process(system.process.pid)
        listening = 0
        for process in [parent, *parent.children(recursive=True)]:
            try:
                sockets = process.net_connections(kind="tcp")
            except psutil.Error:
                continue  # a process that just ended or started
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == system.port for c in sockets):
                listening += 1
        if listening >= workers:
            return
        time.sleep(0.05)  # polling sockets that are not open yet
    raise RuntimeError(f"{system.name}: fewer than {workers} workers listen on {system.port}")


@contextmanager
def started(candidate: Candidate, cpu: str | None) -> Iterator[System]:
    port = free_port()
    argv = candidate.argv(port)
    command = ["taskset", "-c", cpu, *argv] if cpu is not None else argv
    process = subprocess.Popen(
        command,
        cwd=candidate.cwd,
        env={**os.environ, **candidate.env},
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, process)
        yield System(candidate.name, process, port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Load:
    rate: float
    p50: float
    p99: float
    requests: int


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk(url: str, connections: int, seconds: float, cpu: str | None = LOAD_CPU) -> Load:
    threads = min(2, connections)
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", url]
    if cpu is not None:
        argv = ["taskset", "-c", cpu, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    failures = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if failures and sum(int(n) for n in failures.groups()) > 0:
        print(f"  (wrk {url} at {connections} connections: {failures.group(0)})", file=sys.stderr)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors and int(errors.group(1)) > total // 100:
        raise RuntimeError(f"{url}: {errors.group(1)} non-2xx answers:\n{out}")

    def percentile(label: str) -> float:
        match = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s|m)\b", out)
        assert match, out
        return float(match.group(1)) * _UNITS[match.group(2)]

    return Load(rate, percentile("50"), percentile("99"), total)


Figure = tuple[Load, float]
"""(the load's figures, the system's CPU seconds per request during it)."""


def measure(system: System, path: str, connections: int, seconds: float, cpu: str | None) -> Figure:
    url = f"http://127.0.0.1:{system.port}{path}"
    wrk(url, connections, 1.0, cpu)  # warm-up: connections, caches, JITs
    before = system.cpu_seconds()
    load = wrk(url, connections, seconds, cpu)
    used = system.cpu_seconds() - before
    return load, used / max(1, load.requests)


def median(figures: Sequence[Figure]) -> Figure:
    """The median of each figure over runs."""
    loads = [f[0] for f in figures]
    return (
        Load(
            statistics.median(load.rate for load in loads),
            statistics.median(load.p50 for load in loads),
            statistics.median(load.p99 for load in loads),
            sum(load.requests for load in loads),
        ),
        statistics.median(f[1] for f in figures),
    )


Case = tuple[str, int]
"""(path, connections)."""


def alternate(
    systems: Sequence[System], cases: Sequence[Case], args: argparse.Namespace, cpu: str | None
) -> dict[tuple[str, str, int], Figure]:
    """Every case on every system, `args.runs` times, the systems in turn within each run:
    the medians, by (system, path, connections)."""
    samples: dict[tuple[str, str, int], list[Figure]] = {}
    for _ in range(args.runs):
        for path, connections in cases:
            for system in systems:
                figure = measure(system, path, connections, args.seconds, cpu)
                samples.setdefault((system.name, path, connections), []).append(figure)
    return {key: median(figures) for key, figures in samples.items()}


def python() -> str:
    return sys.executable


def gateway_argv(config: Path, workers: int = 1) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        return [
            python(),
            *("-m", "gateway", "run", "--config", str(config)),
            *("--port", str(port), "--workers", str(workers)),
        ]

    return argv


def fanouts(
    args: argparse.Namespace, config: Path, workers: int = 1, suffix: str = ""
) -> list[Candidate]:
    """fanout from this checkout, and from `--baseline` when given."""
    found = [Candidate(f"fanout{suffix}", gateway_argv(config, workers), REPO, GATEWAY_ENV)]
    if args.baseline:
        found.append(
            Candidate(
                f"baseline{suffix}", gateway_argv(config, workers), Path(args.baseline), GATEWAY_ENV
            )
        )
    return found


def floor(up: int) -> Candidate:
    return Candidate(
        "floor",
        lambda port: [
            python(),
            *("-m", "benchmarks.floor", "--upstream", f"http://127.0.0.1:{up}"),
            *("--port", str(port)),
        ],
    )


def passthrough(args: argparse.Namespace, up: int, tmp: Path, config: Path) -> None:
    candidates: list[Candidate] = []
    if shutil.which("nginx"):

        def nginx_argv(port: int) -> list[str]:
            conf = tmp / "nginx.conf"
            conf.write_text(NGINX.format(tmp=tmp, up=up, port=port))
            return ["nginx", "-c", str(conf), "-p", str(tmp)]

        candidates.append(Candidate("nginx proxy_pass, 1 worker", nginx_argv))
    if shutil.which("haproxy"):

        def haproxy_argv(port: int) -> list[str]:
            conf = tmp / "haproxy.cfg"
            conf.write_text(HAPROXY.format(up=up, port=port))
            return ["haproxy", "-f", str(conf), "-db"]

        candidates.append(Candidate("haproxy, 1 thread", haproxy_argv))
    candidates += [floor(up), *fanouts(args, config)]
    case = ("/pass/products/1", 64)
    with ExitStack() as stack:
        systems = [stack.enter_context(started(c, PROXY_CPU)) for c in candidates]
        results = alternate(systems, [case], args, LOAD_CPU)
    rows = [(s.name, *results[(s.name, *case)]) for s in systems]
    reference = rows[0][1].rate
    print(
        f"passthrough of a ~300-byte JSON, 64 connections, "
        f"{args.runs} runs of {args.seconds:g} s (medians)"
    )
    print(f"  {'system':32s} {'req/s':>8s} {'CPU us/req':>11s} {'/ first':>8s}")
    for name, load, cpu in rows:
        print(f"  {name:32s} {load.rate:8.0f} {cpu * 1e6:11.0f} {load.rate / reference:8.3f}")
    by_name = {name: (load, cpu) for name, load, cpu in rows}
    base = by_name["floor"]
    for name in ("fanout", "baseline"):
        if name in by_name:
            ours = by_name[name]
            print(
                f"  {name} / floor: CPU per request {ours[1] / base[1]:.2f} (target <= 0.9), "
                f"req/s {ours[0].rate / base[0].rate:.2f} (target >= 1.1)"
            )


def aggregation(args: argparse.Namespace, up: int, tmp: Path, config: Path) -> None:
    candidates = [floor(up), *fanouts(args, config)]
    cases = [("/one", 10), ("/three", 10), ("/one", 256), ("/three", 256)]
    with ExitStack() as stack:
        systems = [stack.enter_context(started(c, PROXY_CPU)) for c in candidates]
        results = alternate(systems, cases, args, LOAD_CPU)
    names = [s.name for s in systems]
    print(f"aggregation against a 20 ms backend, {args.runs} runs of {args.seconds:g} s (medians)")
    print(f"  {'':30s}" + "".join(f"{name:>11s}" for name in names) + "   / floor")
    for path in ("/one", "/three"):
        label = "1 call" if path == "/one" else "3-call fan-out"
        figures = [results[(name, path, 256)] for name in names]
        rates = [f[0].rate for f in figures]
        cpus = [f[1] * 1e6 for f in figures]
        print(
            f"  {label + ', 256 conns, req/s':30s}"
            + "".join(f"{r:11.0f}" for r in rates)
            + "   "
            + " ".join(f"{r / rates[0]:.2f}" for r in rates[1:])
        )
        print(
            f"  {label + ', CPU us/request':30s}"
            + "".join(f"{c:11.0f}" for c in cpus)
            + "   "
            + " ".join(f"{c / cpus[0]:.2f}" for c in cpus[1:])
        )
    for name in names:
        ratio = results[(name, "/three", 10)][0].p50 / results[(name, "/one", 10)][0].p50
        print(f"  {name}: p50 3 calls / 1 call at 10 connections {ratio:.3f} (target <= 1.03)")


def workers_backend(tmp: Path) -> Candidate:
    """The workers section's backend: nginx answering from memory, else the Python one."""
    if shutil.which("nginx"):
        from benchmarks.upstream import BODY

        def argv(port: int) -> list[str]:
            conf = tmp / "nginx-backend.conf"
            conf.write_text(NGINX_BACKEND.format(tmp=tmp, port=port, body=BODY.decode()))
            return ["nginx", "-c", str(conf), "-p", str(tmp)]

        return Candidate("nginx backend", argv)
    return Candidate(
        "python backend",
        lambda port: [python(), "-m", "benchmarks.upstream", "--port", str(port)],
    )


def workers(args: argparse.Namespace, up: int, tmp: Path, config: Path) -> None:
    with ExitStack() as stack:
        backend = stack.enter_context(started(workers_backend(tmp), None))
        own = tmp / "workers.yaml"
        own.write_text(FANOUT.format(up=backend.port))
        candidates = [
            *fanouts(args, own, 1, " x1"),
            *fanouts(args, own, 2, " x2"),
        ]
        cases = [("/three", 64), ("/three", 512)]
        systems = [stack.enter_context(started(c, None)) for c in candidates]
        for system in systems:
            wait_workers_listening(system, 2 if system.name.endswith(" x2") else 1)
        results = alternate(systems, cases, args, None)
    print(
        f"--workers 2 against 1 (unpinned), 3-call fan-out to the {backend.name} answering "
        f"at once, {args.runs} runs of {args.seconds:g} s"
    )
    for name in ("fanout", "baseline"):
        if (f"{name} x1", "/three", 64) not in results:
            continue
        for _, connections in cases:
            one = results[(f"{name} x1", "/three", connections)]
            two = results[(f"{name} x2", "/three", connections)]
            print(
                f"  {name} {connections:4d} connections: req/s {one[0].rate:6.0f} -> "
                f"{two[0].rate:6.0f} (x{two[0].rate / one[0].rate:.2f}, target >= 1.8); "
                f"p99 {one[0].p99 * 1000:6.1f} ms -> {two[0].p99 * 1000:6.1f} ms "
                f"(x{two[0].p99 / one[0].p99:.2f}, target <= 1.5); "
                f"CPU us/request {one[1] * 1e6:5.0f} -> {two[1] * 1e6:5.0f}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="passthrough,aggregation,workers")
    parser.add_argument(
        "--baseline", default=None, help="another fanout checkout to measure alongside"
    )
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        print(
            "benchmarks.compare needs wrk: apt-get install wrk (and nginx haproxy)", file=sys.stderr
        )
        return 1
    chosen = set(args.only.split(","))
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        upstream = Candidate(
            "upstream", lambda port: [python(), "-m", "benchmarks.upstream", "--port", str(port)]
        )
        with started(upstream, LOAD_CPU) as up:
            config = tmp / "fanout.yaml"
            config.write_text(FANOUT.format(up=up.port))
            for section, run in (
                ("passthrough", passthrough),
                ("aggregation", aggregation),
                ("workers", workers),
            ):
                if section in chosen:
                    run(args, up.port, tmp, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
