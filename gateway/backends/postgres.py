"""PostgreSQL backends: one asyncpg pool per backend, opened and closed by the app's lifespan.

A call's `BackendRequest.args` carries the statement (from the config file only), its bind
values and the result kind (`SqlPlan.args`); the answer is JSON-ready: rows pass through
orjson once, so datetimes are ISO 8601 and Decimals, UUIDs and bytea are strings.

Pool rules:
* waiting for a connection is bounded by `acquire_timeout`; past it the call is `Refused`
  (503 with Retry-After), never an unbounded wait;
* a connection that turns out dead (the server restarted, a proxy dropped it) makes the pool
  expire every connection it holds, and a read is retried once on a fresh one, so a restart is
  not a burst of errors. Statements that may write are not retried: they may have run;
* streams read through a server-side cursor inside a read-only transaction, one batch at a
  time, so memory follows the batch size, not the table.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

import asyncpg
import orjson

from gateway.errors import BadArgument, BadStatus, NoRow, Refused, UpstreamUnavailable
from gateway.spec import PostgresBackend
from gateway.types import JSON, BackendRequest, BackendResponse, Call

log = logging.getLogger("gateway.postgres")

STREAM_BATCH_ROWS = 500
"""Rows fetched from a streaming cursor at a time: one network round trip and one chunk."""

CONNECT_TIMEOUT_SECONDS = 5.0
RETRY_AFTER_SECONDS = 1

# Errors that say "this connection is dead", not "this statement failed".
STALE_CONNECTION = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,  # "connection is closed", "the underlying connection is closed"
    ConnectionError,
)
_READS = ("SELECT", "VALUES", "TABLE", "SHOW")


@lru_cache(maxsize=1024)
def is_read(sql: str) -> bool:
    """True for a statement that only reads, so running it twice is harmless.

    Deliberately narrow: a `WITH` may hide an INSERT, so it does not count.
    """
    words = sql.lstrip(" \t\r\n(").split(None, 1)
    return bool(words) and words[0].upper() in _READS


def _json_default(value: Any) -> Any:
    """How orjson writes what it does not know: Decimals and exotic types as strings."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)  # ranges, geometric types, bit strings...


def rows_to_json(value: Any) -> JSON:
    """Records (or a scalar) -> plain JSON values, through orjson's encoder."""
    if isinstance(value, asyncpg.Record):
        value = dict(value)
    elif isinstance(value, list):
        value = [dict(row) for row in value]
    return orjson.loads(orjson.dumps(value, default=_json_default))


def ndjson(rows: Sequence[asyncpg.Record]) -> bytes:
    """Rows as newline-delimited JSON, one object per line."""
    return b"".join(
        orjson.dumps(dict(row), default=_json_default, option=orjson.OPT_APPEND_NEWLINE)
        for row in rows
    )


@dataclass(slots=True)
class PostgresPool:
    """One configured postgres backend: its pool and how long a call may wait for it."""

    name: str
    pool: asyncpg.Pool
    acquire_timeout: float
    waiting: int = 0  # calls waiting for a connection right now
    waits: int = 0  # acquisitions so far, and the seconds they waited in total
    wait_seconds: float = 0.0

    def __repr__(self) -> str:
        size, idle = self.pool.get_size(), self.pool.get_idle_size()
        return (
            f"<PostgresPool {self.name} [{size - idle} in use, {idle} idle, "
            f"max {self.pool.get_max_size()}]>"
        )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, waited for at most `acquire_timeout`."""
        started = time.monotonic()
        self.waiting += 1
        try:
            connection = await self.pool.acquire(timeout=self.acquire_timeout)
        except TimeoutError:
            raise Refused(
                f"{self.name}: no free database connection within {self.acquire_timeout:g}s",
                retry_after=RETRY_AFTER_SECONDS,
            ) from None
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise UpstreamUnavailable(f"cannot connect to {self.name}: {exc}") from exc
        finally:
            self.waiting -= 1
            self.waits += 1
            self.wait_seconds += time.monotonic() - started
        try:
            yield connection
        finally:
            await self.pool.release(connection)  # asyncpg shields the release itself

    async def query(self, sql: str, params: Sequence[Any], result: str) -> JSON:
        """Run one statement and shape its rows; a read on a dead connection runs again once."""
        attempts = 2 if is_read(sql) else 1
        for attempt in range(1, attempts + 1):
            try:
                async with self.connection() as connection:
                    return await _fetch(connection, sql, params, result)
            except STALE_CONNECTION as exc:
                # one dead connection means the others are likely dead too (a restart):
                # replace them all on their next acquire instead of failing once per connection
                await self.pool.expire_connections()
                if attempt == attempts:
                    raise UpstreamUnavailable(f"{self.name}: connection lost: {exc}") from exc
                log.info("%s: stale connection (%s); retrying on a fresh one", self.name, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    async def stream(self, sql: str, params: Sequence[Any]) -> AsyncGenerator[bytes, None]:
        """NDJSON chunks of `STREAM_BATCH_ROWS` rows, read through a server-side cursor.

        The caller pulls; nothing is read ahead of it. Closing the generator (aclose) rolls
        the read-only transaction back, which closes the cursor, and returns the connection.
        """
        async with self.connection() as connection:
            try:
                async with connection.transaction(readonly=True):
                    cursor = await connection.cursor(sql, *params)
                    while rows := await cursor.fetch(STREAM_BATCH_ROWS):
                        yield ndjson(rows)
            except STALE_CONNECTION as exc:
                await self.pool.expire_connections()
                raise UpstreamUnavailable(f"{self.name}: connection lost: {exc}") from exc
            except asyncpg.PostgresError as exc:
                raise _translate(self.name, exc) from exc


async def _fetch(
    connection: asyncpg.Connection, sql: str, params: Sequence[Any], result: str
) -> JSON:
    try:
        if result == "one":
            row = await connection.fetchrow(sql, *params)
            if row is None:
                raise NoRow("no row found")
            return rows_to_json(row)
        if result == "value":
            return rows_to_json(await connection.fetchval(sql, *params))
        return rows_to_json(await connection.fetch(sql, *params))
    except asyncpg.PostgresError as exc:
        if isinstance(exc, STALE_CONNECTION):
            raise
        raise _translate("database", exc) from exc


def _translate(name: str, exc: asyncpg.PostgresError) -> BadArgument | BadStatus:
    if isinstance(exc, asyncpg.DataError):
        # the client's value converted (an int) but the column refused it (int4 overflow)
        return BadArgument(f"a parameter was refused: {exc}")
    return BadStatus(f"{name} error {exc.sqlstate}: {exc}", status=None)


def postgres_call(backend: PostgresPool) -> Call:
    """A `Call` running the statement in `request.args` (see `SqlPlan.args`)."""

    async def call(request: BackendRequest) -> BackendResponse:
        args = request.args
        body = await backend.query(args["sql"], args["params"], args["result"])
        return BackendResponse(200, body)

    return call


async def _reset(connection: asyncpg.Connection) -> None:
    """Before a connection goes back to the pool: only what our own calls could leave.

    asyncpg's default reset (RESET ALL, UNLISTEN, unlock advisory locks...) costs a round
    trip per call; statements from the config never change session state, and transactions
    (streams) are always ended by their context manager, so this is a safety net only.
    """
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


async def open_pool(name: str, spec: PostgresBackend, dsn: str) -> PostgresPool:
    """Create and warm the pool; close it with `close_pool`.

    When the database cannot be reached at start-up the gateway still starts (its HTTP
    backends work, /readyz reports the database) with a pool that connects on demand.
    """
    options: dict[str, Any] = {
        "max_size": spec.pool.max,
        "statement_cache_size": spec.statement_cache_size,
        "timeout": CONNECT_TIMEOUT_SECONDS,
        "reset": _reset,
        "server_settings": {"application_name": f"fanout-gateway:{name}"},
    }
    try:
        pool = await asyncpg.create_pool(dsn, min_size=spec.pool.min, **options)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("%s: database unreachable at start-up (%s); connecting on demand", name, exc)
        pool = await asyncpg.create_pool(dsn, min_size=0, **options)
    return PostgresPool(name, pool, spec.pool.acquire_timeout)


async def close_pool(backend: PostgresPool, grace: float = 5.0) -> None:
    """Close gracefully (in-flight calls finish), forcibly after `grace` seconds."""
    try:
        await asyncio.wait_for(backend.pool.close(), grace)
    except TimeoutError:
        backend.pool.terminate()
        log.warning(
            "%s: database pool terminated: calls still running after %gs", backend.name, grace
        )
    else:
        log.info("%s: database pool closed", backend.name)


async def open_postgres(
    specs: Mapping[str, PostgresBackend], stack: AsyncExitStack, database_url: str
) -> dict[str, PostgresPool]:
    """Open a pool per backend (`${DATABASE_URL}` -> `database_url`); `stack` closes them."""
    pools: dict[str, PostgresPool] = {}
    for name, spec in specs.items():
        dsn = database_url if spec.dsn == "${DATABASE_URL}" else spec.dsn
        pools[name] = await open_pool(name, spec, dsn)
        stack.push_async_callback(close_pool, pools[name])
    return pools
