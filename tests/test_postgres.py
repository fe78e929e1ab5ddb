"""Postgres backends end to end: a real PostgreSQL, a real users service, real gateways."""

from __future__ import annotations

import asyncio
import base64
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from gateway.devtools.embedded_pg import EmbeddedPostgres, free_port
from services.userdb import prepare as prepare_userdb
from tests.processes import Running, start_gateway

CONFIG = """
version: 1
backends:
  db:
    kind: postgres
    dsn: ${{DATABASE_URL}}
    pool: {{min: 2, max: 10, acquire_timeout: 1s}}
  users: {{kind: http, url: "{users}", timeout: 2s}}
endpoints:
  - path: /users/{{id}}
    calls:
      - {{name: user, backend: db, sql: "SELECT * FROM users WHERE id = $1", params: ["{{id:int}}"], result: one, required: true}}
  - path: /profiles/{{id}}
    calls:
      - name: user
        backend: db
        sql: "SELECT id, name, email, created_at FROM users WHERE id = $1"
        params: ["{{id:int}}"]
        result: one
        required: true
      - {{name: orders, backend: users, path: /orders, query: {{user: "{{id}}"}}, allow: [count, orders.id], group: orders}}
      - name: total
        backend: db
        sql: "SELECT coalesce(sum(total), 0) FROM orders WHERE user_id = $1"
        params: ["{{calls.user.id:int}}"]
        needs: [user]
        result: value
        group: spent
  - path: /first-users
    calls:
      - {{name: first, backend: db, sql: "SELECT id, active FROM users WHERE id <= $1 ORDER BY id", params: ["{{query.n:int}}"]}}
  - path: /count
    calls:
      - {{name: users, backend: db, sql: "SELECT count(*) FROM users", result: value}}
  - path: /by-email
    calls:
      - {{name: found, backend: db, sql: "SELECT id FROM users WHERE email = $1", params: ["{{query.email}}"], group: found}}
  - path: /search
    calls:
      - {{name: found, backend: db, sql: "SELECT id FROM users WHERE name LIKE $1 ORDER BY id LIMIT 3", params: ["%{{query.q}}%"], group: found}}
  - path: /typed
    calls:
      - name: echo
        backend: db
        sql: "SELECT $1::uuid AS u, $2::date AS d, $3::bool AS b, $4::timestamptz AS t, $5::float8 AS f, $6::int4 AS small"
        params: ["{{query.u:uuid}}", "{{query.d:date}}", "{{query.b:bool}}", "{{query.t:datetime}}", "{{query.f:float}}", "{{query.small:int}}"]
        result: one
  - path: /export
    calls:
      - name: rows
        backend: db
        sql: "SELECT id, name, balance, created_at FROM users WHERE id <= coalesce($1, 1000000) ORDER BY id"
        params: ["{{query.limit:int}}"]
        result: stream
"""


@pytest.fixture(scope="module")
def gateway(database_url: str, users: Running) -> Iterator[Running]:
    with GatewayProcess(CONFIG.format(users=users.url), database_url) as running:
        yield running


class GatewayProcess:
    """A gateway process on `config`, with DATABASE_URL set; it must exit 0 when stopped."""

    def __init__(self, config: str, database_url: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fanout-test-gw-"))
        path = self.dir / "gateway.yaml"
        path.write_text(config)
        self.running = start_gateway(path, env={"DATABASE_URL": database_url})

    def __enter__(self) -> Running:
        return self.running

    def __exit__(self, *exc_info: object) -> None:
        code = self.running.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        assert code == 0, f"gateway exit code {code}"


def get(running: Running, path: str, **params: Any) -> httpx.Response:
    with httpx.Client(base_url=running.url, timeout=30) as client:
        return client.get(path, params=params)


def sql(dsn: str, statement: str, *args: Any) -> Any:
    async def run() -> Any:
        connection = await asyncpg.connect(dsn)
        try:
            return await connection.fetch(statement, *args)
        finally:
            await connection.close()

    return asyncio.run(run())


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll a condition in the database or gateway until it holds (bounded; not a sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- results and encoding ------------------------------------------------------------------


def test_one_row_as_json(gateway: Running) -> None:
    response = get(gateway, "/users/1")
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-complete"] == "true"
    assert response.json() == {
        "id": 1,
        "name": "Bruno Abe",
        "email": "user1@example.com",
        "created_at": "2020-01-01T00:17:00+00:00",  # ISO 8601
        "birthday": "1971-09-07",
        "active": True,
        "balance": "79.19",  # a Decimal, exactly, as a string
        "external_id": "bdb1dd10-5679-979c-a82b-28edd1c8ccd2",
        "avatar": base64.b64encode(bytes.fromhex("6b3a2098")).decode(),  # bytea as base64
    }


def test_no_row_is_404_problem(gateway: Running) -> None:
    response = get(gateway, "/users/0")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["failed_calls"]["user"]["status"] == 404


def test_many_rows_and_value(gateway: Running) -> None:
    rows = get(gateway, "/first-users", n=3)
    assert rows.json() == {
        "first": [{"id": 1, "active": True}, {"id": 2, "active": True}, {"id": 3, "active": True}]
    }
    assert get(gateway, "/first-users", n=0).json() == {"first": []}
    assert get(gateway, "/count").json() == {"users": 100_000}


def test_sql_and_http_merged_in_one_response(gateway: Running, database_url: str) -> None:
    response = get(gateway, "/profiles/7")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == 7 and body["email"] == "user7@example.com"
    assert body["orders"]["count"] == 3
    assert [o["id"] for o in body["orders"]["orders"]] == [71, 72, 73]
    expected = sql(database_url, "SELECT sum(total)::text FROM orders WHERE user_id = 7")
    assert body["spent"] == expected[0][0]
    # the SQL call is required: a missing user is the endpoint's 404, not a partial answer
    assert get(gateway, "/profiles/0").status_code == 404


# --- typed parameters ----------------------------------------------------------------------


def test_typed_parameters_convert(gateway: Running) -> None:
    response = get(
        gateway,
        "/typed",
        u="6f1d7b2c-2b9c-4a43-9d8b-3c1e6a0f2d11",
        d="2024-02-29",
        b="true",
        t="2024-02-29T12:30:00Z",
        f="2.5",
        small="7",
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "u": "6f1d7b2c-2b9c-4a43-9d8b-3c1e6a0f2d11",
        "d": "2024-02-29",
        "b": True,
        "t": "2024-02-29T12:30:00+00:00",
        "f": 2.5,
        "small": 7,
    }
    # a query parameter the client did not send binds NULL
    assert get(gateway, "/typed").json() == dict.fromkeys(("u", "d", "b", "t", "f", "small"))


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        ("/users/abc", {}, "id"),
        ("/users/1.5", {}, "id"),
        ("/users/99999999999999999999", {}, "id"),
        ("/typed", {"u": "not-a-uuid"}, "query.u"),
        ("/typed", {"d": "2024-02-30"}, "query.d"),
        ("/typed", {"b": "maybe"}, "query.b"),
        ("/typed", {"t": "yesterday"}, "query.t"),
        ("/typed", {"f": "nan"}, "query.f"),
        ("/first-users", {"n": "1;DROP TABLE users"}, "query.n"),
    ],
)
def test_a_bad_value_is_a_400_naming_the_parameter(
    gateway: Running, path: str, params: dict[str, str], name: str
) -> None:
    response = get(gateway, path, **params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert repr(name) in response.json()["detail"]


def test_a_value_the_column_refuses_is_a_400(gateway: Running) -> None:
    response = get(gateway, "/typed", small=str(2**40))  # an int, but not an int4
    assert response.status_code == 400, response.text
    assert "int32" in response.json()["failed_calls"]["echo"]["error"]


def test_injection_attempts_are_plain_values(gateway: Running) -> None:
    for attempt in ("' OR '1'='1", "x'; DROP TABLE users; --", "user1@example.com' --"):
        response = get(gateway, "/by-email", email=attempt)
        assert response.status_code == 200, response.text
        assert response.json() == {"found": []}
    assert get(gateway, "/by-email", email="user1@example.com").json() == {"found": [{"id": 1}]}
    # LIKE wildcards in a value are data for LIKE, but never SQL
    assert get(gateway, "/search", q="'; DELETE FROM users; --").json() == {"found": []}
    assert get(gateway, "/count").json() == {"users": 100_000}


# --- streaming -----------------------------------------------------------------------------


def test_stream_is_ndjson(gateway: Running) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        response = client.get("/export", params={"limit": 1234})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = response.content.splitlines()
    assert len(lines) == 1234
    first, last = orjson.loads(lines[0]), orjson.loads(lines[-1])
    assert first == {
        "id": 1,
        "name": "Bruno Abe",
        "balance": "79.19",
        "created_at": "2020-01-01T00:17:00+00:00",
    }
    assert last["id"] == 1234
    assert get(gateway, "/export", limit="many").status_code == 400


def _open_gateway_transactions(dsn: str) -> int:
    rows = sql(
        dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'fanout-gateway:%'"
        " AND (xact_start IS NOT NULL OR state <> 'idle')",
    )
    return int(rows[0][0])


def test_a_client_leaving_mid_stream_closes_the_cursor(gateway: Running, database_url: str) -> None:
    with (
        httpx.Client(base_url=gateway.url, timeout=30) as client,
        client.stream("GET", "/export") as response,
    ):
        assert response.status_code == 200
        chunks = response.iter_raw()
        received = len(next(chunks))
        assert received > 0
        # the stream is open: its read-only transaction is in pg_stat_activity
        assert _open_gateway_transactions(database_url) == 1
    # the client hung up after one chunk of 100,000 rows: the gateway must notice, roll the
    # transaction back (closing the cursor) and give the connection back
    wait_until(lambda: _open_gateway_transactions(database_url) == 0, "the stream to close")
    assert get(gateway, "/users/2").status_code == 200


# --- the pool ------------------------------------------------------------------------------

POOL_CONFIG = """
version: 1
backends:
  db: {kind: postgres, dsn: "DSN", timeout: 20s, pool: {min: 2, max: 2, acquire_timeout: 300ms}}
endpoints:
  - path: /hold
    calls:
      - {name: held, backend: db, sql: "SELECT pg_advisory_lock_shared(4242)::text AS held", result: one}
  - path: /users/{id}
    calls:
      - {name: user, backend: db, sql: "SELECT id FROM users WHERE id = $1", params: ["{id:int}"], result: one}
"""


class AdvisoryLock:
    """An advisory lock held by a connection of our own, on an event loop in a thread."""

    def __init__(self, dsn: str, key: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.connection = self._run(asyncpg.connect(dsn))
        self._run(self.connection.execute("SELECT pg_advisory_lock($1)", key))

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def release(self) -> None:
        self._run(self.connection.close())  # ends the session, and with it the lock
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def test_pool_exhaustion_is_a_fast_503(database_url: str) -> None:
    config = POOL_CONFIG.replace("DSN", database_url)  # a literal dsn works as well
    with GatewayProcess(config, "postgresql://unused@127.0.0.1:1/unused") as gateway:
        assert get(gateway, "/users/1").status_code == 200
        lock = AdvisoryLock(database_url, 4242)
        try:
            with ThreadPoolExecutor(2) as pool:
                held = [pool.submit(get, gateway, "/hold") for _ in range(2)]
                wait_until(lambda: _waiting_on_lock(database_url) == 2, "both connections held")
                started = time.monotonic()
                refused = get(gateway, "/users/1")
                elapsed = time.monotonic() - started
                metrics = get(gateway, "/metrics").text
                ready = get(gateway, "/readyz").json()
                lock.release()
                assert [f.result().status_code for f in held] == [200, 200]
        finally:
            if lock.thread.is_alive():
                lock.release()
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["content-type"] == "application/problem+json"
        assert elapsed < 5.0  # bounded by acquire_timeout (300ms), never an unbounded wait
        assert 'gateway_db_pool_in_use{backend="db"} 2.0' in metrics
        assert 'gateway_db_pool_max{backend="db"} 2.0' in metrics
        assert 'gateway_db_pool_wait_seconds_count{backend="db"}' in metrics
        assert ready["checks"]["postgres:db"]["saturated"] is True
        assert get(gateway, "/users/1").status_code == 200


def _waiting_on_lock(dsn: str) -> int:
    rows = sql(
        dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fanout-gateway:db'"
        " AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
    )
    return int(rows[0][0])


# --- a restart of PostgreSQL ---------------------------------------------------------------

RESTART_CONFIG = """
version: 1
backends:
  db: {kind: postgres, dsn: "${DATABASE_URL}", pool: {min: 4, max: 4, acquire_timeout: 2s}}
endpoints:
  - path: /users/{id}
    calls:
      - {name: user, backend: db, sql: "SELECT id FROM users WHERE id = $1", params: ["{id:int}"], result: one}
"""


def test_reads_recover_from_a_postgres_restart() -> None:
    """Every pooled connection dies with the server; the next reads must not fail for it."""
    # a server of its own, whatever DATABASE_URL says: this test restarts it
    base = Path(tempfile.mkdtemp(prefix="fanout-test-pg-restart-"))
    base.chmod(0o755)
    server = EmbeddedPostgres(base / "pgdata", free_port(), fsync=False)
    try:
        server.start()
        asyncio.run(prepare_userdb(server.dsn, users=1_000))
        with (
            GatewayProcess(RESTART_CONFIG, server.dsn) as gateway,
            ThreadPoolExecutor(8) as pool,
        ):
            # four connections in the pool, all idle when the server goes away
            warm = list(pool.map(lambda i: get(gateway, f"/users/{i}").status_code, range(1, 33)))
            assert warm == [200] * 32
            statuses: list[int] = []
            stop = threading.Event()

            def traffic() -> None:
                with httpx.Client(base_url=gateway.url, timeout=30) as client:
                    while not stop.is_set() and len(statuses) < 20_000:
                        statuses.append(client.get("/users/5").status_code)

            background = pool.submit(traffic)
            server.restart()
            after = list(pool.map(lambda i: get(gateway, f"/users/{i}").status_code, range(1, 41)))
            stop.set()
            background.result()
            assert after == [200] * 40, after
            assert statuses and statuses[-1] == 200
            assert get(gateway, "/readyz").status_code == 200
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
