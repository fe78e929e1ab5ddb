"""Hostile benchmark: issue 11's attack table against one gateway, in one run (not a test).

    python -m benchmarks.hostile [--only SUBSTRING] [--skip-memory]

Per attack: what the attacker got (status), the time until it got it (the median of its
connections), the gateway's RSS before / peak / after (2.5 s after the attack, time for
memory to be given back), and the normal client's p99 during the attack: a process of its
own (tests/hammer.py, one connection, an aggregation and a passthrough in turn, 20 ms
apart); "yes" when under 100 ms. The config attacks (finding 13) run `gateway check`: their
RSS is that process's peak, and no gateway is involved.

Then "memory after a burst": 3 bursts of 8 endless bodies and 8 gzip bombs against a fresh
gateway with each memory choice (gateway/observability/memory.py): RSS before, peak, after.

Processes: one gateway worker on default settings, the catalog service, the normal client;
in this process the hostile upstreams (tests/hostile_upstream.py), a counting fault proxy
and the attacking clients (tests/attacks.py); all on 127.0.0.1, every process stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import psutil

from tests import attacks
from tests.attacks import LAST_CHUNK, Outcome, chunk
from tests.faultproxy import FaultProxy, fault_proxy
from tests.hostile_upstream import Behaviour, HostileUpstream, hostile_upstream
from tests.processes import REPO, Running, start_gateway, start_service
from tests.watch import MIB, RssWatch

CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}"}}
  counted: {{kind: http, url: "{counted}"}}
  endless: {{kind: http, url: "{endless}", timeout: 30s}}
  bomb: {{kind: http, url: "{bomb}", timeout: 30s}}
  switch: {{kind: http, url: "{switch}"}}
  drip: {{kind: http, url: "{drip}"}}
  echo: {{kind: http, url: "{echo}"}}
  dead: {{kind: http, url: "http://127.0.0.1:{dead}"}}
endpoints:
  - {{path: "/ok/{{id}}", calls: [{{name: product, backend: catalog, path: "/products/{{id}}"}}]}}
  - path: "/agg/{{id}}"
    method: POST
    calls: [{{name: product, backend: counted, path: "/products/{{id}}"}}]
  - path: "/agg/{{id}}"
    calls: [{{name: product, backend: counted, path: "/products/{{id}}"}}]
  - path: /endless
    timeout: 30s
    calls: [{{name: big, backend: endless, path: /x, required: true}}]
  - path: /bomb
    timeout: 30s
    calls: [{{name: big, backend: bomb, path: /x, required: true}}]
  - {{path: "/pass/{{rest:path}}", proxy: {{backend: catalog, path: "/{{rest}}"}}}}
  - {{path: "/drip/{{rest:path}}", proxy: {{backend: drip, path: "/{{rest}}"}}}}
  - {{path: "/switch/{{rest:path}}", proxy: {{backend: switch, path: "/{{rest}}"}}}}
  - path: "/limited/{{rest:path}}"
    max_body: 256KiB
    proxy: {{backend: echo, path: "/{{rest}}"}}
  - path: /note
    calls: [{{name: n, backend: echo, path: /n, headers: {{x-note: "{{query.note}}"}}}}]
  - path: /relay
    calls:
      - {{name: first, backend: echo, path: /a, query: {{q: "{{query.q}}"}}}}
      - name: second
        backend: echo
        path: /b
        headers: {{x-relayed: "{{calls.first.query.q}}"}}
        needs: [first]
        required: true
  - {{path: /dead, calls: [{{name: dead, backend: dead, path: /x, required: true}}]}}
"""
P99_TARGET = 0.1


@dataclass
class Stack:
    """What the attacks run against."""

    gateway: Running
    session: aiohttp.ClientSession
    counted: FaultProxy
    echo: HostileUpstream
    dead_port: int

    @property
    def port(self) -> int:
        return self.gateway.port

    async def get(self, path: str, **params: str) -> tuple[int, bytes, float]:
        return await fetch(self.session, f"{self.gateway.url}{path}", **params)


async def fetch(
    session: aiohttp.ClientSession, url: str, **params: str
) -> tuple[int, bytes, float]:
    """GET `url`: status, body, seconds."""
    started = time.perf_counter()
    async with session.get(url, params=params) as response:
        body = await response.read()
        return response.status, body, time.perf_counter() - started


@dataclass
class Row:
    attack: str
    status: str
    seconds: float
    rss: tuple[float, float, float] | None  # before, peak, after (MiB)
    p99_ms: float | None
    note: str = ""

    def line(self) -> str:
        # a value of 0 is one not measured (a config row has only its process's peak)
        rss = "  ".join(f"{v:6.0f}" if v else f"{'-':>6}" for v in self.rss or (0, 0, 0))
        if self.p99_ms is None:
            normal = f"{'-':>15}"
        else:
            verdict = "yes" if self.p99_ms < P99_TARGET * 1000 else "NO"
            normal = f"{verdict:>4} {self.p99_ms:7.1f} ms"
        line = f"{self.attack:48} {self.status:>14} {self.seconds:8.2f} s  {rss}  {normal}"
        return f"{line}  {self.note}".rstrip()


Attack = Callable[[Stack], Awaitable[tuple[str, float, str]]]


def statuses(outcomes: list[Outcome]) -> str:
    found = sorted({str(o.status) if o.status else "closed" for o in outcomes})
    return "/".join(found) + (f" x{len(outcomes)}" if len(outcomes) > 1 else "")


def median(outcomes: list[Outcome]) -> float:
    return statistics.median(o.elapsed for o in outcomes)


async def many(
    stack: Stack, count: int, pieces: Callable[[], Iterable[bytes] | AsyncIterator[bytes]]
) -> list[Outcome]:
    """`count` connections at once, each sending what `pieces()` gives."""
    return list(
        await asyncio.gather(*(attacks.attack(stack.port, pieces(), 120) for _ in range(count)))
    )


# --- the attacks, by finding ---------------------------------------------------------------


async def endless_bodies(stack: Stack) -> tuple[str, float, str]:
    answers = await asyncio.gather(*(stack.get("/endless") for _ in range(4)))
    return (
        "/".join(sorted({str(s) for s, _, _ in answers})) + " x4",
        max(t for *_, t in answers),
        "",
    )


async def gzip_bombs(stack: Stack) -> tuple[str, float, str]:
    answers = await asyncio.gather(*(stack.get("/bomb") for _ in range(4)))
    error = orjson.loads(answers[0][1])["failed_calls"]["big"]["error"]
    status = "/".join(sorted({str(s) for s, _, _ in answers})) + " x4"
    return status, max(t for *_, t in answers), error[:40]


async def header_flood(stack: Stack) -> tuple[str, float, str]:
    before = stack.counted.requests
    outcomes = await many(stack, 10, lambda: attacks.header_flood("/agg/1", 20_000))
    return statuses(outcomes), median(outcomes), f"backend calls {stack.counted.requests - before}"


async def huge_line(stack: Stack) -> tuple[str, float, str]:
    outcomes = await many(stack, 1, lambda: attacks.huge_line("/agg/1", 64 << 20))
    return statuses(outcomes), median(outcomes), ""


async def slow_bodies(stack: Stack) -> tuple[str, float, str]:
    outcomes = await many(stack, 100, lambda: attacks.slow_body("/pass/upload", 1000, 1.0))
    return statuses(outcomes), median(outcomes), "normal client: a passthrough to the same backend"


async def slow_heads(stack: Stack) -> tuple[str, float, str]:
    outcomes = await many(stack, 2000, lambda: attacks.slow_head("/agg/1", 1.0))
    return statuses(outcomes), median(outcomes), ""


async def silent_connections(stack: Stack) -> tuple[str, float, str]:
    outcomes = await many(stack, 2000, attacks.silence)
    return statuses(outcomes), median(outcomes), "closed without an answer"


async def dripping_upstream(stack: Stack) -> tuple[str, float, str]:
    started = time.perf_counter()
    try:
        status, _, _ = await stack.get("/drip/x")
        result = str(status)
    except aiohttp.ClientPayloadError:
        result = "200, cut"
    return result, time.perf_counter() - started, "route timeout 2 s (the backend's)"


async def switching_protocols(stack: Stack) -> tuple[str, float, str]:
    status, _, seconds = await stack.get("/switch/x")
    return str(status), seconds, ""


async def header_injection(stack: Stack) -> tuple[str, float, str]:
    client, _, t1 = await stack.get("/note", note="a\r\nX-Injected: 1")
    relayed, _, t2 = await stack.get("/relay", q="a\r\nX-Injected: 1")
    return f"{client} / {relayed}", max(t1, t2), "client value / upstream value"


async def address_leak(stack: Stack) -> tuple[str, float, str]:
    status, body, seconds = await stack.get("/dead")
    leaked = b"127.0.0.1" in body or str(stack.dead_port).encode() in body
    return str(status), seconds, f"address in the answer: {'yes' if leaked else 'no'}"


async def chunked_over_limit(stack: Stack) -> tuple[str, float, str]:
    before = stack.echo.received
    pieces = attacks.chunked("/limited/upload", [chunk(b"x" * 16384)] * 64 + [LAST_CHUNK])
    outcome = await attacks.attack(stack.port, pieces)
    await until(lambda: stack.echo.open_connections == 0)  # it has read what it was sent
    reached = (stack.echo.received - before) / 1024
    return statuses([outcome]), outcome.elapsed, f"1 MiB sent, {reached:.0f} KiB reached upstream"


async def bad_framing(stack: Stack) -> tuple[str, float, str]:
    before = stack.counted.requests
    bad = [
        attacks.chunked("/agg/1", [b"zz\r\nabc\r\n", LAST_CHUNK]),
        [attacks.head("/agg/1", "POST", extra="Transfer-Encoding: xchunked\r\n"), chunk(b"a")],
    ]
    outcomes = [await attacks.attack(stack.port, pieces) for pieces in bad]
    return statuses(outcomes), median(outcomes), f"backend calls {stack.counted.requests - before}"


async def bad_host(stack: Stack) -> tuple[str, float, str]:
    outcomes = [
        await attacks.attack(stack.port, [attacks.head("/agg/1", host=False)]),
        await attacks.attack(stack.port, [attacks.head("/agg/1", extra="Host: b\r\n")]),
    ]
    return statuses(outcomes), median(outcomes), "no Host; two Hosts"


ATTACKS: list[tuple[str, Attack]] = [
    ("1  endless JSON body, 4 calls at once", endless_bodies),
    ("1  gzip bomb 3 MB -> 3 GiB, 4 calls at once", gzip_bombs),
    ("2  20,000 headers (249 KB), 10 requests", header_flood),
    ("3  one 64 MiB header line", huge_line),
    ("4  100 passthrough POSTs dripping 1 B/s", slow_bodies),
    ("5  2,000 connections sending heads at 1 B/s", slow_heads),
    ("5  2,000 connections that never send a byte", silent_connections),
    ("6  passthrough upstream dripping 1 B/s", dripping_upstream),
    ("9  upstream answers 101 unasked", switching_protocols),
    ("10 CR/LF rendered into a header", header_injection),
    ("11 upstream refuses connections", address_leak),
    ("12 1 MiB chunked to a 256 KiB passthrough", chunked_over_limit),
    ("14 bad chunk size; xchunked", bad_framing),
    ("15 HTTP/1.1 without Host; with two", bad_host),
]


# --- running them ------------------------------------------------------------------------------


def progress(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


async def requests_to(session: aiohttp.ClientSession, gateway: Running, endpoint: str) -> float:
    async with session.get(f"{gateway.url}/metrics") as response:
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_requests_total{") and f'endpoint="{endpoint}"' in line
    )


async def measured(stack: Stack, name: str, attack: Attack) -> Row:
    """One attack with the normal client beside it and the gateway's RSS watched."""
    normal = start_normal_client(stack.gateway)
    try:
        served = await requests_to(stack.session, stack.gateway, "/ok/{id}")
        while True:  # until the normal client is going
            if await requests_to(stack.session, stack.gateway, "/ok/{id}") >= served + 3:
                break
            await asyncio.sleep(0.05)  # the polling interval
        with RssWatch(stack.gateway.process.pid) as rss:
            status, seconds, note = await attack(stack)
    finally:
        normal.terminate()
        out, _ = normal.communicate(timeout=60)
    report = orjson.loads(out)
    await asyncio.sleep(2.5)  # time for the memory to be given back (checked every second)
    after = rss.now()
    if set(report["statuses"]) != {"200"}:
        note += f" normal client got {report['statuses']}"
    return Row(
        name,
        status,
        seconds,
        (rss.before / MIB, rss.peak / MIB, after / MIB),
        report["p99_ms"],
        note,
    )


def start_normal_client(gateway: Running) -> subprocess.Popen[bytes]:
    """tests/hammer.py as the normal client: one connection, /ok and /pass in turn."""
    urls = [f"{gateway.url}/ok/1", f"{gateway.url}/pass/products/1"]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.hammer", *urls, "--connections", "1", "--pause", "0.02"],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if condition() or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.01)  # the polling interval


def check_row(name: str, path: Path, text: str) -> Row:
    """`gateway check` on a hostile file: its exit code, time, peak RSS, lines printed."""
    path.write_text(text)
    started = time.perf_counter()
    check = subprocess.Popen(
        [sys.executable, "-m", "gateway", "check", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process = psutil.Process(check.pid)
    peak = 0
    while check.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.01)  # the sampling period
    out, err = check.communicate()
    seconds = time.perf_counter() - started
    lines = len((out + err).splitlines())
    return Row(
        name, f"exit {check.returncode}", seconds, (0.0, peak / MIB, 0.0), None, f"{lines} lines"
    )


def config_rows(tmp: Path) -> list[Row]:
    duration = (
        'version: 1\nbackends:\n  a: {kind: http, url: "http://x", timeout: "1'
        + " " * (10 << 20)
        + 'x"}\n'
    )
    aliases = "version: 1\nx: &a {kind: http, url: 'http://x'}\nbackends:\n" + "".join(
        f"  b{i}: *a\n" for i in range(200_000)
    )
    problems = "version: 1\nbackends:\n" + "".join(
        f"  b{i}: {{kind: http}}\n" for i in range(20_000)
    )
    return [
        check_row("13 check: a duration of '1' + 10 MB + 'x'", tmp / "duration.yaml", duration),
        check_row("13 check: 200,000 YAML aliases", tmp / "aliases.yaml", aliases),
        check_row("13 check: 20,000 problems", tmp / "problems.yaml", problems),
    ]


async def run(args: argparse.Namespace) -> list[Row]:
    catalog = start_service("catalog")
    gateway: Running | None = None
    try:
        async with AsyncExitStack() as stack:
            counted = await stack.enter_async_context(fault_proxy(catalog.port))
            names: tuple[Behaviour, ...] = ("endless", "bomb", "switch", "drip", "echo")
            upstreams = {
                name: await stack.enter_async_context(hostile_upstream(name, bomb_mib=3072))
                for name in names
            }
            upstreams["drip"].drip_every = 1.0
            with socket.socket() as closed:
                closed.bind(("127.0.0.1", 0))
                dead = closed.getsockname()[1]
            config = Path(args.tmp) / "hostile.yaml"
            config.write_text(
                CONFIG.format(
                    catalog=catalog.url,
                    counted=counted.url,
                    dead=dead,
                    **{name: u.url for name, u in upstreams.items()},
                )
            )
            gateway = start_gateway(config, env={"GATEWAY_LOG_LEVEL": "warning"})
            session = await stack.enter_async_context(
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
            )
            bench = Stack(gateway, session, counted, upstreams["echo"], dead)
            await wait_ready(session, gateway)
            rows = []
            for name, attack in ATTACKS:
                if args.only and args.only not in name:
                    continue
                progress(name)
                rows.append(await measured(bench, name, attack))
            return rows
    finally:
        if gateway is not None:
            gateway.stop()
        catalog.stop()


async def wait_ready(session: aiohttp.ClientSession, gateway: Running) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if (await fetch(session, f"{gateway.url}/readyz"))[0] == 200:
                return
        except aiohttp.ClientConnectionError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        await asyncio.sleep(0.05)  # polling readiness: the app is still starting


MEMORY_CHOICES = [
    ("gc + malloc_trim (default)", {}),
    ("neither", {"GATEWAY_MEMORY_TRIM_SECONDS": "0"}),
    ("neither, MALLOC_ARENA_MAX=2", {"GATEWAY_MEMORY_TRIM_SECONDS": "0", "MALLOC_ARENA_MAX": "2"}),
    (
        "neither, MALLOC_MMAP_THRESHOLD_=131072",
        {"GATEWAY_MEMORY_TRIM_SECONDS": "0", "MALLOC_MMAP_THRESHOLD_": "131072"},
    ),
]
BURST_CONFIG = """
version: 1
backends:
  endless: {{kind: http, url: "{endless}", timeout: 30s}}
  bomb: {{kind: http, url: "{bomb}", timeout: 30s}}
endpoints:
  - {{path: /endless, timeout: 30s, calls: [{{name: big, backend: endless, path: /x}}]}}
  - {{path: /bomb, timeout: 30s, calls: [{{name: big, backend: bomb, path: /x}}]}}
"""


async def memory_after_bursts(tmp: Path) -> list[str]:
    lines = [
        "memory after a burst: 3 bursts of 8 endless bodies + 8 gzip bombs (RSS MiB)",
        f"  {'':40} {'before':>7} {'peak':>7} {'after':>7}",
    ]
    async with (
        hostile_upstream("endless") as endless,
        hostile_upstream("bomb") as bomb,
        aiohttp.ClientSession() as session,
    ):
        config = tmp / "burst.yaml"
        config.write_text(BURST_CONFIG.format(endless=endless.url, bomb=bomb.url))
        for name, env in MEMORY_CHOICES:
            progress(f"memory: {name}")
            gateway = start_gateway(config, env={"GATEWAY_LOG_LEVEL": "warning", **env})
            try:
                await wait_ready(session, gateway)
                await fetch(session, f"{gateway.url}/endless")
                await fetch(session, f"{gateway.url}/bomb")
                with RssWatch(gateway.process.pid) as rss:
                    for _ in range(3):
                        await asyncio.gather(
                            *(
                                fetch(session, f"{gateway.url}{p}")
                                for p in ["/endless", "/bomb"] * 8
                            )
                        )
                await asyncio.sleep(3)  # time for the memory to be given back
                after = rss.now()
            finally:
                gateway.stop()
            lines.append(
                f"  {name:40} {rss.before / MIB:7.0f} {rss.peak / MIB:7.0f} {after / MIB:7.0f}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help="run only the attacks whose name contains this")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory table")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = tmp
        rows = asyncio.run(run(args))
        if not args.only or "13" in args.only:
            progress("config attacks")
            rows += config_rows(Path(tmp))
        memory = (
            [] if args.skip_memory or args.only else asyncio.run(memory_after_bursts(Path(tmp)))
        )
    print(
        f"{'finding / attack':48} {'status':>14} {'answered':>10}  "
        f"{'RSS MiB before':>14} {'peak':>6} {'after':>6}  normal p99<100ms"
    )
    for row in rows:
        print(row.line())
    for line in memory:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
