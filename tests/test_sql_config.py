"""SQL calls without a database: config checks, parameter conversion, row encoding (tables)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from gateway.backends.postgres import is_read, rows_to_json
from gateway.backends.sql import bind, convert
from gateway.config.loader import parse_spec
from gateway.engine.templates import parse_template
from gateway.errors import BadRequest, ConfigError, MissingValue

HEAD = """
version: 1
backends:
  db: {kind: postgres, dsn: "${DATABASE_URL}"}
  web: {kind: http, url: "http://127.0.0.1:8101"}
"""

BAD = [
    (
        "{path: /a, calls: [{backend: web, sql: 'SELECT 1'}]}",
        "endpoints[0].calls[0].sql: not used by an http backend ('web'): "
        "only postgres backends' calls take `sql`",
    ),
    (
        "{path: /a, calls: [{backend: db}]}",
        "endpoints[0].calls[0].sql: a call to a postgres backend needs `sql`",
    ),
    (
        "{path: /a, calls: [{backend: db, sql: 'SELECT 1', path: /x}]}",
        "endpoints[0].calls[0].path: not used by a postgres backend ('db')",
    ),
    (
        "{path: '/a/{id}', calls: [{backend: db, sql: 'SELECT $1, $2', params: ['{id}']}]}",
        "endpoints[0].calls[0].params: the sql uses $2 but 1 params are given",
    ),
    (
        "{path: /a, calls: [{backend: db, sql: 'SELECT 1', params: ['x']}]}",
        "endpoints[0].calls[0].params: 1 params given but the sql uses $0 last",
    ),
    (
        "{path: '/a/{id}', calls: [{backend: db, sql: 'SELECT $1', params: ['{id:integer}']}]}",
        "endpoints[0].calls[0].params[0]: {id:integer}: unknown type 'integer'",
    ),
    (
        "{path: /a, calls: [{backend: db, sql: 'SELECT $1', params: ['{nope:int}']}]}",
        "endpoints[0].calls[0].params[0]: {nope:int}: the endpoint path has no parameter 'nope'",
    ),
    (
        "{path: /a, calls: [{backend: db, sql: 'SELECT $1', params: ['x{query.q:int}']}]}",
        "a typed parameter must be the whole value",
    ),
    (
        "{path: /a, calls: [{backend: db, sql: 'SELECT $1', params: ['{calls.u.id}']}]}",
        "add 'u' to `needs`",
    ),
    (
        "{path: /a, calls: [{backend: db, sql: 'SELECT 1', result: stream}, {backend: web}]}",
        "endpoints[0].calls[0].result: a `stream` call must be the endpoint's only call",
    ),
    (
        "{path: /a, calls: [{backend: db, sql: 'SELECT 1', result: some}]}",
        "endpoints[0].calls[0].result: Input should be 'one', 'many', 'value' or 'stream'",
    ),
]


@pytest.mark.parametrize(("endpoint", "expected"), BAD)
def test_bad_sql_calls(endpoint: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_spec(HEAD + f"endpoints: [{endpoint}]", "t.yaml")
    assert any(expected in line for line in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        (
            "{kind: postgres, dsn: 'mysql://x'}",
            "backends.db.dsn: a dsn is a postgresql:// URL or ${DATABASE_URL}",
        ),
        (
            "{kind: postgres, dsn: '${FANOUT_TEST_NEVER_SET}'}",
            "backends.db.dsn: ${FANOUT_TEST_NEVER_SET} is not set (and has no default)",
        ),
        (
            "{kind: postgres, dsn: 'postgresql://h/d', pool: {min: 5, max: 2}}",
            "backends.db.pool: min (5) must not be larger than max (2)",
        ),
        (
            "{kind: postgres, dsn: 'postgresql://h/d', pool: {acquire_timeout: 0}}",
            "backends.db.pool.acquire_timeout: Input should be greater than 0",
        ),
        (
            "{kind: postgres, dsn: 'postgresql://h/d', statement_cache_size: -1}",
            "backends.db.statement_cache_size",
        ),
    ],
)
def test_bad_postgres_backends(backend: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_spec(f"version: 1\nbackends: {{db: {backend}}}\n", "t.yaml")
    assert any(expected in line for line in caught.value.problems), caught.value.problems


def test_a_good_sql_endpoint_parses() -> None:
    spec = parse_spec(
        HEAD
        + """endpoints:
  - path: /u/{id}
    calls:
      - {name: u, backend: db, sql: "SELECT * FROM users WHERE id = $1", params: ["{id:int}"], result: one}
      - {name: o, backend: web, path: "/orders", query: {user: "{calls.u.id}"}, needs: [u]}
      - {name: n, backend: db, sql: "SELECT $1::text", params: ["{calls.u.name}"], needs: [u], result: value}
""",
        "t.yaml",
    )
    assert spec.endpoints[0].calls[0].result == "one"


@pytest.mark.parametrize(
    ("type_name", "text", "expected"),
    [
        ("int", "42", 42),
        ("int", "-7", -7),
        ("int", 42, 42),
        ("float", "2.5", 2.5),
        ("float", 3, 3.0),
        ("bool", "true", True),
        ("bool", "0", False),
        (
            "uuid",
            "6f1d7b2c-2b9c-4a43-9d8b-3c1e6a0f2d11",
            uuid.UUID("6f1d7b2c-2b9c-4a43-9d8b-3c1e6a0f2d11"),
        ),
        ("date", "2024-02-29", date(2024, 2, 29)),
        ("datetime", "2024-02-29T12:00:00Z", datetime(2024, 2, 29, 12, tzinfo=UTC)),
        ("str", "x'; DROP TABLE users", "x'; DROP TABLE users"),
        (None, True, "true"),
    ],
)
def test_convert(type_name: str | None, text: Any, expected: Any) -> None:
    assert convert(type_name, text) == expected


@pytest.mark.parametrize(
    ("type_name", "text"),
    [
        ("int", "1.0"),
        ("int", "0x10"),
        ("int", "\uff11\uff12"),  # full-width digits are digits to str.isdigit, not to us
        ("int", str(2**63)),
        ("int", True),
        ("float", "inf"),
        ("bool", "maybe"),
        ("uuid", "123"),
        ("date", "2023-02-29"),
        ("datetime", "noon"),
    ],
)
def test_convert_refuses(type_name: str, text: Any) -> None:
    with pytest.raises(ValueError, match=f"not a valid {type_name}"):
        convert(type_name, text)


def test_bind_names_the_bad_client_value_and_fails_the_call_for_a_bad_result_value() -> None:
    values = {"path": {"id": "x"}, "query": {}, "header": {}, "calls": {"u": {"id": "y"}}}
    with pytest.raises(BadRequest, match="parameter 'id' is not a valid int"):
        bind([parse_template("{id:int}")], values)
    with pytest.raises(MissingValue, match=r"calls\.u\.id: not a valid int"):
        bind([parse_template("{calls.u.id:int}")], values)
    assert bind([parse_template("{query.absent:int}"), parse_template("%{id}%")], values) == (
        None,
        "%x%",
    )


def test_rows_become_json_values() -> None:
    row = {
        "n": Decimal("10.50"),
        "b": b"\x00\xff",
        "u": uuid.UUID(int=1),
        "t": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        "d": date(2024, 1, 2),
        "i": timedelta(minutes=1, seconds=30),
        "none": None,
    }
    assert rows_to_json([row]) == [
        {
            "n": "10.50",
            "b": "AP8=",
            "u": "00000000-0000-0000-0000-000000000001",
            "t": "2024-01-02T03:04:05+00:00",
            "d": "2024-01-02",
            "i": 90.0,
            "none": None,
        }
    ]


@pytest.mark.parametrize(
    ("sql", "read"),
    [
        ("SELECT 1", True),
        ("  select * from t", True),
        ("(SELECT 1) UNION (SELECT 2)", True),
        ("VALUES (1)", True),
        ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", False),
        ("UPDATE t SET a = 1", False),
        ("", False),
    ],
)
def test_only_plain_reads_are_retried(sql: str, read: bool) -> None:
    assert is_read(sql) is read
