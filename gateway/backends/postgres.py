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

The kind registers its pools' metrics (`DatabasePoolCollector`) and one readiness check per
backend; the checks and bind parameters of its calls are in gateway/backends/sql.py.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any, Literal

import asyncpg
import orjson
from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector
from pydantic import BeforeValidator, Field, model_validator

from gateway.backends.live import LiveBackend, OpenContext, Stream
from gateway.backends.sql import check_sql_call, sql_arguments
from gateway.config.models import BackendSpec, CallSpec, Model, Problem
from gateway.config.refs import RefScope
from gateway.config.values import Duration
from gateway.engine.plan import CallTraits
from gateway.errors import BadArgument, NoRow, QueryFailed, Refused, UpstreamUnavailable
from gateway.observability.tracing import traceparent, tracing_enabled
from gateway.types import JSON, BackendRequest, BackendResponse, Call, ReadinessCheck

log = logging.getLogger("gateway.postgres")


class PoolSpec(Model):
    """Connection pool limits of a postgres backend."""

    min: int = Field(default=2, ge=0, description="Connections opened at start-up and kept.")
    max: int = Field(default=20, ge=1, description="Most connections open at once.")
    acquire_timeout: Duration = Field(
        default=1.0, description="Wait at most this long for a free connection, then 503."
    )

    @model_validator(mode="after")
    def _min_not_above_max(self) -> PoolSpec:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not be larger than max ({self.max})")
        return self


def _check_dsn(dsn: str) -> str:
    # `${DATABASE_URL}` (or any `${NAME}`) was expanded when the file was loaded
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise ValueError("a dsn is a postgresql:// URL or ${DATABASE_URL}")
    return dsn


Dsn = Annotated[str, BeforeValidator(lambda v: _check_dsn(v) if isinstance(v, str) else v)]


class PostgresBackend(BackendSpec):
    """A PostgreSQL database through one asyncpg pool; its calls run SQL from this file."""

    kind: Literal["postgres"]
    dsn: Dsn = Field(
        description="postgresql:// URL, e.g. ${DATABASE_URL} (unset: the embedded demo database)."
    )
    pool: PoolSpec = Field(default_factory=PoolSpec)
    statement_cache_size: int = Field(
        default=100, ge=0, description="Prepared statements cached per connection; 0 for pgbouncer."
    )


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

    def usage(self) -> dict[str, int]:
        """Connections open, lent and at most, and calls waiting: for the status page."""
        size = self.pool.get_size()
        return {
            "connections": size,
            "in_use": size - self.pool.get_idle_size(),
            "max": self.pool.get_max_size(),
            "waiting": self.waiting,
        }

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
            raise UpstreamUnavailable(f"cannot connect to {self.name}", details=str(exc)) from exc
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
                    raise UpstreamUnavailable(
                        f"{self.name}: connection lost", details=str(exc)
                    ) from exc
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
                raise UpstreamUnavailable(
                    f"{self.name}: connection lost", details=str(exc)
                ) from exc
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


def _translate(name: str, exc: asyncpg.PostgresError) -> BadArgument | QueryFailed:
    if isinstance(exc, asyncpg.DataError):
        # the client's value converted (an int) but the column refused it (int4 overflow)
        return BadArgument(f"a parameter was refused: {exc}")
    return QueryFailed(f"{name} error {exc.sqlstate}: {exc}")


def postgres_call(backend: PostgresPool, comment: bool = False) -> Call:
    """A `Call` running the statement in `request.args` (see `SqlArguments.render`);
    `comment`: append a sqlcommenter `/*traceparent='...'*/` of the current span."""

    async def call(request: BackendRequest) -> BackendResponse:
        args = request.args
        sql = args["sql"]
        if comment and (parent := traceparent()) is not None:
            # a per-request text: each statement is prepared anew (no statement-cache hit)
            sql = f"{sql} /*traceparent='{parent}'*/"
        body = await backend.query(sql, args["params"], args["result"])
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


def postgres_stream(backend: PostgresPool) -> Stream:
    """The streaming form of a call: NDJSON chunks of the rows of `request.args`."""

    def stream(request: BackendRequest) -> AsyncGenerator[bytes, None]:
        return backend.stream(request.args["sql"], request.args["params"])

    return stream


class DatabasePoolCollector(Collector):
    """Size, use and wait time of every postgres pool of one app, labelled by backend; one
    per app (`pool_collector`), its pools added as backends open and removed as they close."""

    def __init__(self) -> None:
        self.pools: dict[str, PostgresPool] = {}

    def collect(self) -> Iterator[GaugeMetricFamily | SummaryMetricFamily]:
        labels = ["backend"]
        size = GaugeMetricFamily(
            "gateway_db_pool_connections", "Open connections of the pool.", labels=labels
        )
        in_use = GaugeMetricFamily(
            "gateway_db_pool_in_use", "Connections lent to calls right now.", labels=labels
        )
        limit = GaugeMetricFamily(
            "gateway_db_pool_max", "Most connections the pool may open.", labels=labels
        )
        waiting = GaugeMetricFamily(
            "gateway_db_pool_waiting", "Calls waiting for a connection right now.", labels=labels
        )
        wait = SummaryMetricFamily(
            "gateway_db_pool_wait_seconds", "Time calls waited for a connection.", labels=labels
        )
        for name, backend in list(self.pools.items()):
            pool = backend.pool
            size.add_metric([name], pool.get_size())
            in_use.add_metric([name], pool.get_size() - pool.get_idle_size())
            limit.add_metric([name], pool.get_max_size())
            waiting.add_metric([name], backend.waiting)
            wait.add_metric([name], backend.waits, backend.wait_seconds)
        yield from (size, in_use, limit, waiting, wait)


def pool_collector(context: OpenContext) -> DatabasePoolCollector:
    """The app's one collector of database pools, registered with the first pool."""
    found = context.shared.get("database-pools")
    if not isinstance(found, DatabasePoolCollector):
        found = context.shared["database-pools"] = DatabasePoolCollector()
        context.registry.register(found)
    return found


READINESS_PROBE_SECONDS = 1.0


def readiness(backend: PostgresPool) -> ReadinessCheck:
    """Ready when a connection answers `SELECT 1`; a saturated pool is reported, not failed."""

    async def check() -> dict[str, object]:
        pool = backend.pool
        report: dict[str, object] = {
            "size": pool.get_size(),
            "in_use": pool.get_size() - pool.get_idle_size(),
            "max": pool.get_max_size(),
        }
        try:
            connection = await pool.acquire(timeout=READINESS_PROBE_SECONDS)
        except TimeoutError:
            # every connection is busy: the database answers, we are saturated, not broken
            return {**report, "saturated": True}
        try:
            await connection.fetchval("SELECT 1", timeout=READINESS_PROBE_SECONDS)
        finally:
            await pool.release(connection)
        return report

    return check


class PostgresKind:
    """`kind: postgres` (see gateway/backends/registry.py)."""

    name = "postgres"
    spec = PostgresBackend
    passthrough = False
    # `method` is accepted and ignored, as it always was: the statement says what runs
    call_fields = frozenset({"sql", "params", "result", "method"})

    def check(self, name: str, spec: PostgresBackend) -> list[Problem]:
        return []

    def check_call(
        self, spec: PostgresBackend, call: CallSpec, where: str, scope: RefScope
    ) -> list[Problem]:
        return check_sql_call(call, where, scope)

    def traits(self, spec: PostgresBackend, call: CallSpec) -> CallTraits:
        sql = call.sql or ""
        return CallTraits(
            method=call.method,
            arguments=sql_arguments(call),
            streams=call.result == "stream",
            # the statement as configured: values reach it only as bind parameters
            attributes={
                "db.system.name": "postgresql",
                "db.operation.name": sql.split(None, 1)[0].upper() if sql.strip() else "",
                "db.query.text": sql,
            },
        )

    async def open(
        self, specs: Mapping[str, PostgresBackend], context: OpenContext
    ) -> dict[str, LiveBackend]:
        """A pool per backend; the stack closes them."""
        pools: dict[str, PostgresPool] = {}
        collector = pool_collector(context)
        for name, spec in specs.items():
            pools[name] = await open_pool(name, spec, spec.dsn)
            context.stack.push_async_callback(close_pool, pools[name])
            collector.pools[name] = pools[name]
            context.stack.callback(collector.pools.pop, name, None)
        comment = context.settings.sql_commenter and tracing_enabled(context.settings)
        live: dict[str, LiveBackend] = {}
        for name, pool in pools.items():
            call = postgres_call(pool, comment)
            live[name] = LiveBackend(
                name=name,
                kind=self.name,
                call=call,
                hosts=((name, call),),
                stream=postgres_stream(pool),
                readiness=readiness(pool),
                usage=pool.usage,
            )
        return live


KIND = PostgresKind()
