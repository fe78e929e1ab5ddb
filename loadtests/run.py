"""One command for a capacity run: stack up, locust headless, gateway sampled, report, verdict.

    python -m loadtests.run --profile slow-backend --publish docs/capacity/slow-backend

starts the demo services and one gateway process (loadtests/capacity.yaml, ephemeral ports),
or targets `--host` for a stack that is already running; raises the open-files soft limit to
the hard limit for itself and its children; runs locust with `--processes` through ramp, hold
and stop; samples the gateway's /metrics and RSS every second; checks the SLOs and exits 1
naming each failed one. The report folder (`--out`) gets locust's CSV and HTML, PNG plots and
summary.md; `--publish DIR` copies the small, commit-worthy part of it (no HTML, no history).

Every process started here is stopped by PID, also on Ctrl-C, SIGTERM or failure.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TypeVar

import psutil

from gateway.devtools.embedded_pg import free_port
from loadtests import report
from loadtests.figures import Limits, check, summarise
from loadtests.profiles import PROFILES, Profile
from loadtests.sampler import Sampler, answers_by_status, wait_drained, write_samples
from loadtests.stack import REPO, Stack, running_stack, stop_process

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
DEFAULT_CONFIG = HERE / "capacity.yaml"
CSV_PREFIX = "locust"
DRAIN_TIMEOUT_S = 120.0  # after the load: how long the gateway may take to be idle again
T = TypeVar("T")
PUBLISHED = (
    "summary.md",
    *report.PLOTS,
    f"{CSV_PREFIX}_stats.csv",
    f"{CSV_PREFIX}_failures.csv",
    "gateway_samples.csv",
)


def raise_open_files_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE := hard, inherited by every child; returns the limits before."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"open files: soft limit {soft} -> {hard} (the hard limit), for this run's processes")
    return soft, hard


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    parser.add_argument("--out", type=Path, help="report folder (default loadtests/reports/...)")
    parser.add_argument("--publish", type=Path, help="copy summary, plots, small CSVs here")
    parser.add_argument("--host", help="target a running gateway instead of starting a stack")
    parser.add_argument("--gateway-pid", type=int, help="with --host: sample this process' RSS")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="routes file")
    parser.add_argument("--users", type=int)
    parser.add_argument("--spawn-rate", type=float)
    parser.add_argument("--hold", type=float, help="seconds at full load after the ramp")
    parser.add_argument("--processes", type=int, help="locust worker processes")
    parser.add_argument("--max-failure-ratio", type=float)
    parser.add_argument("--max-p99-ms", type=float)
    parser.add_argument("--min-peak-in-flight", type=int)
    parser.add_argument("--min-peak-connections", type=int)
    parser.add_argument("--min-shed", type=int, help="shed (503) responses expected at least")
    parser.add_argument(
        "--gateway-env", action="append", default=[], metavar="NAME=VALUE", help="repeatable"
    )
    parser.add_argument(
        "--locust-env", action="append", default=[], metavar="NAME=VALUE", help="repeatable"
    )
    return parser


def _pairs(items: Sequence[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def _pick(override: T | None, default: T) -> T:
    return default if override is None else override


@contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every `finally` stops its processes."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_locust(
    argv: list[str], env: dict[str, str], out: Path, sampler: Sampler, deadline_s: float
) -> int:
    """Run locust to completion, printing progress; its forked workers are stopped too."""
    children: dict[int, psutil.Process] = {}
    with (out / "locust.log").open("wb") as log:
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()
        while process.poll() is None:
            if time.monotonic() - started > deadline_s:
                print(f"locust still running after {deadline_s:.0f}s: stopping it")
                break
            try:
                for child in psutil.Process(process.pid).children(recursive=True):
                    children.setdefault(child.pid, child)
            except psutil.Error:
                pass  # exited between poll() and here
            try:
                process.wait(timeout=5)  # returns as soon as locust exits
                break
            except subprocess.TimeoutExpired:
                pass  # still running: print progress every 5 s
            if sampler.samples:
                s = sampler.samples[-1]
                print(
                    f"  t={time.monotonic() - started:5.0f}s  in flight {s.in_flight:>7,.0f}  "
                    f"client connections {s.open_connections:>7,.0f}  "
                    f"RSS {s.rss_bytes / 2**20:7,.0f} MiB  fds {s.open_fds:>6,}",
                    flush=True,
                )
        return process.wait(timeout=0) if process.poll() is not None else -1
    finally:
        stop_process(process)
        for child in children.values():
            # psutil checks the start time too, so a reused PID is never signalled
            if child.is_running():
                child.kill()


def probe(url: str) -> str:
    """One plain request after the run: does the gateway still answer?"""
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        return f"no answer ({exc})"
    return f"{status} in {(time.perf_counter() - started) * 1000:.0f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    profile: Profile = PROFILES[args.profile]
    users = _pick(args.users, profile.users)
    spawn_rate = _pick(args.spawn_rate, profile.spawn_rate)
    hold = _pick(args.hold, profile.hold_s)
    processes = _pick(args.processes, profile.processes)
    run_time = math.ceil(users / spawn_rate + hold)
    limits = Limits(
        max_failure_ratio=_pick(args.max_failure_ratio, profile.max_failure_ratio),
        max_p99_ms=_pick(args.max_p99_ms, profile.max_p99_ms),
        min_peak_in_flight=_pick(args.min_peak_in_flight, profile.min_peak_in_flight),
        min_peak_connections=_pick(args.min_peak_connections, profile.min_peak_connections),
        min_shed=_pick(args.min_shed, profile.min_shed),
    )
    gateway_env = {**profile.gateway_env, **_pairs(args.gateway_env)}
    locust_env = {**profile.locust_env, **_pairs(args.locust_env)}
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out: Path = (args.out or HERE / "reports" / f"{profile.name}-{stamp}").resolve()
    out.mkdir(parents=True, exist_ok=True)

    limits_before = raise_open_files_limit()
    load_before = os.getloadavg()
    print(f"load average before the run: {load_before[0]:.2f} ({os.cpu_count()} cores)")
    print(f"report folder: {out}")

    # locust's master listens for its workers on 5557 unless told otherwise: a free port
    # keeps another locust on this machine (a test, a colleague's run) from joining this run
    # with workers of its own, or this run's workers from joining it
    master_port = free_port()
    locust_argv = [
        sys.executable,
        "-m",
        "locust",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(master_port),
        "--master-port",
        str(master_port),
        "--locustfile",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        f"{spawn_rate:g}",
        "--run-time",
        f"{run_time}s",
        "--stop-timeout",
        f"{profile.stop_timeout_s:g}",
        "--processes",
        str(processes),
        "--csv",
        str(out / CSV_PREFIX),
        "--csv-full-history",
        "--html",
        str(out / "report.html"),
        "--exit-code-on-error",
        "0",  # the verdict below decides, with the failure ratio the run allows
        "--only-summary",
    ]
    stack_cm = (
        nullcontext(Stack(args.host, args.gateway_pid or 0, {}, args.config))
        if args.host
        else running_stack(args.config.resolve(), gateway_env, out)
    )
    with _terminate_on_sigterm(), stack_cm as stack:
        print(f"gateway: {stack.url} (pid {stack.gateway_pid or 'unknown'})")
        sampler = Sampler(stack.url, stack.gateway_pid or None, set(stack.backend_ports.values()))
        sampler.start()
        try:
            code = run_locust(
                [*locust_argv, "--host", stack.url],
                {**os.environ, **locust_env},
                out,
                sampler,
                deadline_s=run_time + profile.stop_timeout_s + 120,
            )
            drained = wait_drained(stack.url, DRAIN_TIMEOUT_S)
        finally:
            sampler.stop()
        samples = [*sampler.samples, sampler.sample(count_sockets=True)]
        recovery = probe(stack.url + profile.recovery_path)
        try:
            answers: dict[str, int] | None = answers_by_status(stack.url)
        except OSError as exc:
            print(f"could not read the gateway's answers by status: {exc}", file=sys.stderr)
            answers = None
        recovery += (
            f"; in flight back to 0 {drained:.0f}s after locust stopped"
            if drained is not None
            else f"; requests still in flight {DRAIN_TIMEOUT_S:.0f}s after locust stopped"
        )
    load_after = os.getloadavg()
    write_samples(samples, out / "gateway_samples.csv")
    if code not in (0, 1):
        print(f"locust exited with code {code}; see {out / 'locust.log'}", file=sys.stderr)
    stats = out / f"{CSV_PREFIX}_stats.csv"
    if not stats.exists():
        print(f"no statistics written; see {out / 'locust.log'}", file=sys.stderr)
        return 1

    figures = summarise(stats, samples, recovery, answers)
    failed = check(figures, limits)
    report.plot(out / f"{CSV_PREFIX}_stats_history.csv", samples, out, profile.name)
    report.summary(
        out=out,
        profile=profile.name,
        why=profile.why,
        command="python -m loadtests.run " + shlex.join(sys.argv[1:] if argv is None else argv),
        env=report.environment(limits_before),
        load={
            "users": f"{users:,} (locust --processes {processes})",
            "ramp": f"{spawn_rate:g} users/s, {users / spawn_rate:.0f}s",
            "hold": f"{hold:g}s at full load (locust --run-time {run_time}s)",
            "stop": f"users finish their request in flight, up to {profile.stop_timeout_s:g}s",
            "locust environment": ", ".join(f"{k}={v}" for k, v in locust_env.items()) or "-",
            "gateway": (
                f"--host {args.host}"
                if args.host
                else f"one process, routes {args.config.name} (copy: routes.yaml)"
            ),
            "gateway environment": ", ".join(f"{k}={v}" for k, v in gateway_env.items())
            or "defaults",
            "load average (1 min) before / after": f"{load_before[0]:.2f} / {load_after[0]:.2f}",
        },
        figures=figures,
        failed=failed,
        limits={
            "max-failure-ratio": f"{limits.max_failure_ratio:g}",
            "max-p99-ms": str(limits.max_p99_ms),
            "min-peak-in-flight": str(limits.min_peak_in_flight),
            "min-peak-connections": str(limits.min_peak_connections),
            "min-shed": str(limits.min_shed),
            "max-failure-ratio (gateway)": "the same ratio over the gateway's own count of "
            "5xx answers, which includes requests locust abandoned at the end",
            "recovery": "in flight back to 0 within "
            f"{DRAIN_TIMEOUT_S:.0f}s of the load stopping, then a request answers 200",
        },
        notes=[
            f"/metrics could not be read {sampler.errors} times during the run "
            "(each gap is one missing row in gateway_samples.csv)",
            "p50/p95/p99 in the plots are locust's current percentiles over a 10 s window; "
            "those in the tables cover the whole run.",
            "Load generator, gateway and demo services share the same cores, so every "
            "figure here is a lower bound for a gateway with cores of its own.",
        ],
    )
    if args.publish:
        args.publish.mkdir(parents=True, exist_ok=True)
        for name in PUBLISHED:
            if (out / name).exists():
                shutil.copy2(out / name, args.publish / name)
    print((out / "summary.md").read_text(encoding="utf-8").split("\n## Checks")[0])
    for failure in failed:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
