"""A `for_each` call of a SQL backend: each element's row through bind parameters, a real
PostgreSQL (the suite's embedded one, or DATABASE_URL) and a real gateway process."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import Running, start, start_gateway

CONFIG = """
version: 1
backends:
  counted: {{kind: http, url: "{counted}"}}
  db: {{kind: postgres, dsn: "{dsn}", pool: {{min: 1, max: 4}}}}
endpoints:
  - path: /users
    error_details: true
    calls:
      - {{name: items, backend: counted, path: /items, query: {{n: "5"}}, target: items, allow: [id], group: items}}
      - name: user
        backend: db
        sql: "SELECT email FROM users WHERE id = $1::bigint + $2::bigint"
        params: ["{{item.id:int}}", "{{query.shift:int|default:0}}"]
        result: one
        for_each: calls.items
        into: user
        concurrency: 4
"""


@pytest.fixture(scope="module")
def gateway(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    counted = start("counted", [sys.executable, "-m", "tests.collections_backend"])
    path: Path = tmp_path_factory.mktemp("collections-sql") / "gateway.yaml"
    path.write_text(CONFIG.format(counted=counted.url, dsn=database_url))
    running = start_gateway(path)
    yield running
    assert running.stop() == 0
    counted.stop()


def test_each_element_gets_its_row(gateway: Running) -> None:
    response = httpx.get(f"{gateway.url}/users", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-complete"] == "true", response.text
    assert response.json()["items"] == [
        {"id": i, "user": {"email": f"user{i}@example.com"}} for i in range(1, 6)
    ]


def test_elements_without_a_row_fail_alone_and_say_so(gateway: Running) -> None:
    body = httpx.get(f"{gateway.url}/users", params={"shift": "100000000"}, timeout=30).json()
    assert body["items"] == [{"id": i} for i in range(1, 6)]
    assert body["_errors"]["user"]["elements"] == [0, 1, 2, 3, 4]
    assert body["_errors"]["user"]["status"] == 404, body


def test_a_bad_client_value_is_still_a_400_before_any_call(gateway: Running) -> None:
    response = httpx.get(f"{gateway.url}/users", params={"shift": "abc"}, timeout=30)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
