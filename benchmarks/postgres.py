"""PostgreSQL backend benchmark: gateway overhead on an indexed read, and streaming memory.

    python -m benchmarks.postgres [--seconds 8] [--clients 32] [--pool 10]

(1) requests/s of a gateway endpoint doing one `SELECT ... WHERE id = $1` (primary key)
    divided by queries/s of a bare asyncpg loop with the same pool size and concurrency,
    measured in alternating rounds so drift in machine load hits both alike. The gateway
    side also pays HTTP parsing and a second process, so expect well below 1.0; the figure
    tracks what the gateway costs per SQL call.
(2) peak RSS of the gateway process while it streams 100,000 rows as NDJSON to a slow
    reader (small receive buffer, reads 16 KiB at a time), against its RSS just before.
    Flat means the growth is far below the body size: rows are not buffered.

Uses DATABASE_URL when set, else an embedded PostgreSQL in a temporary directory. Every
process it starts (PostgreSQL, the gateway) is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
import psutil

from gateway.devtools.embedded_pg import scratch_database
from services.userdb import USER_COUNT
from services.userdb import prepare as prepare_userdb
from tests.processes import Running, start_gateway

SQL = "SELECT id, name, email, created_at FROM users WHERE id = $1"
CONFIG = """
version: 1
backends:
  db:
    kind: postgres
    dsn: ${{DATABASE_URL}}
    timeout: 10s
    pool: {{min: {pool}, max: {pool}, acquire_timeout: 10s}}
endpoints:
  - path: /users/{{id}}
    calls:
      - {{name: user, backend: db, sql: "{sql}", params: ["{{id:int}}"], result: one}}
  - path: /export
    calls:
      - name: rows
        backend: db
        sql: "SELECT id, name, email, created_at, balance FROM users ORDER BY id"
        result: stream
"""


def user_id(n: int) -> int:
    return 1 + (n * 7919) % USER_COUNT  # spread over the table, deterministic


async def gateway_rps(gateway: Running, clients: int, seconds: float) -> float:
    done = 0
    stop_at = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(k: int) -> None:
            nonlocal done
            n = k
            while time.perf_counter() < stop_at:
                async with session.get(f"{gateway.url}/users/{user_id(n)}") as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"gateway answered {response.status}")
                done += 1
                n += clients

        started = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        return done / (time.perf_counter() - started)


async def bare_qps(pool: asyncpg.Pool, clients: int, seconds: float) -> float:
    done = 0
    stop_at = time.perf_counter() + seconds

    async def client(k: int) -> None:
        nonlocal done
        n = k
        while time.perf_counter() < stop_at:
            async with pool.acquire() as connection:
                row = await connection.fetchrow(SQL, user_id(n))
            if row is None:
                raise RuntimeError("no row")
            done += 1
            n += clients

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    return done / (time.perf_counter() - started)


async def throughput_ratio(
    gateway: Running, dsn: str, pool_size: int, clients: int, seconds: float
) -> tuple[float, float]:
    gateway_runs: list[float] = []
    bare_runs: list[float] = []
    async with asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size) as pool:
        await gateway_rps(gateway, clients, 1.0)  # warm-up: connections, caches, statements
        await bare_qps(pool, clients, 1.0)
        for _ in range(4):
            gateway_runs.append(await gateway_rps(gateway, clients, seconds / 4))
            bare_runs.append(await bare_qps(pool, clients, seconds / 4))
    return sum(gateway_runs) / len(gateway_runs), sum(bare_runs) / len(bare_runs)


def rss(pid: int) -> int:
    process = psutil.Process(pid)
    return int(process.memory_info().rss) + sum(
        int(child.memory_info().rss) for child in process.children(recursive=True)
    )


async def stream_memory(gateway: Running) -> tuple[int, int, int, int]:
    """(baseline RSS, peak RSS, body bytes, rows) while a slow reader takes /export."""
    pid = gateway.process.pid
    baseline = rss(pid)
    peak = baseline
    sock = socket.socket()
    # a small receive window: the kernel cannot soak up the stream on the reader's behalf
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.connect(("127.0.0.1", gateway.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /export HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    received = 0
    rows = 0
    last_sample = 0.0
    previous = b""
    while chunk := await reader.read(16 * 1024):
        received += len(chunk)
        # every row ends in `}\n`; chunked framing adds `\r\n`, never `}\n`
        rows += (previous[-1:] + chunk).count(b"}\n")
        previous = chunk
        if time.perf_counter() - last_sample > 0.02:
            peak = max(peak, rss(pid))
            last_sample = time.perf_counter()
        await asyncio.sleep(0.001)  # the slow reader: ~16 KiB per millisecond at most
    writer.close()
    return baseline, peak, received, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.postgres", description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--pool", type=int, default=10)
    args = parser.parse_args(argv)

    gateway: Running | None = None
    try:
        with scratch_database("fanout-bench-pg-") as dsn, tempfile.TemporaryDirectory() as tmp:
            asyncio.run(prepare_userdb(dsn))
            config = Path(tmp) / "gateway.yaml"
            config.write_text(CONFIG.format(pool=args.pool, sql=SQL))
            gateway = start_gateway(config, env={"DATABASE_URL": dsn})
            via_gateway, bare = asyncio.run(
                throughput_ratio(gateway, dsn, args.pool, args.clients, args.seconds)
            )
            baseline, peak, body, rows = asyncio.run(stream_memory(gateway))
            code = gateway.stop()
            gateway = None
            if code != 0:
                print(f"gateway exited with {code}")
                return 1
    finally:
        if gateway is not None:
            gateway.stop()

    mib = 1024 * 1024
    print(
        f"indexed read, pool {args.pool}, {args.clients} concurrent clients:\n"
        f"  gateway  {via_gateway:9.0f} requests/s\n"
        f"  asyncpg  {bare:9.0f} queries/s (bare loop, same pool size and concurrency)\n"
        f"  ratio    {via_gateway / bare:9.2f}\n"
        f"streaming {rows:,} rows ({body / mib:.1f} MiB NDJSON) to a slow reader:\n"
        f"  gateway RSS before {baseline / mib:7.1f} MiB\n"
        f"  gateway RSS peak   {peak / mib:7.1f} MiB  (+{(peak - baseline) / mib:.1f} MiB, "
        f"{(peak - baseline) / body:.1%} of the body)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
