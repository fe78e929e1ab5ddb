"""The demo's write side on the users service (services/stock.py), a real process on the
session's PostgreSQL: reservations never oversell, and a short stock is a 409 problem+json."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from services.userdb import SHORT_STOCK, SHORT_STOCK_EVERY
from tests.processes import Running


def test_reservations_take_stock_and_refuse_what_is_not_there(users: Running) -> None:
    sku = SHORT_STOCK_EVERY * 2  # only SHORT_STOCK units, used by no other test
    with httpx.Client(base_url=users.url, timeout=30) as client:
        first = client.post("/reservations", json={"user_id": 1, "sku": sku, "quantity": 2})
        assert first.status_code == 200, first.text
        assert first.json()["available"] == SHORT_STOCK - 2
        unit = first.json()["unit_price"]
        assert first.json()["total"] == f"{2 * float(unit):.2f}"
        short = client.post("/reservations", json={"sku": sku, "quantity": 2})
        assert short.status_code == 409
        assert short.headers["content-type"] == "application/problem+json"
        assert short.json()["available"] == SHORT_STOCK - 2
        assert client.post("/reservations", json={"sku": 5000, "quantity": 1}).status_code == 404
        for bad in ({"sku": "1", "quantity": 1}, {"sku": 1, "quantity": 0}, [1]):
            assert client.post("/reservations", json=bad).status_code == 400


def test_concurrent_reservations_never_oversell(users: Running) -> None:
    sku = SHORT_STOCK_EVERY * 3
    with httpx.Client(base_url=users.url, timeout=30) as client, ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(
                lambda _: (
                    client.post("/reservations", json={"sku": sku, "quantity": 1}).status_code
                ),
                range(8),
            )
        )
    assert sorted(statuses) == [200] * SHORT_STOCK + [409] * (8 - SHORT_STOCK)


def test_events_are_stored_and_listed(users: Running) -> None:
    with httpx.Client(base_url=users.url, timeout=30) as client:
        stored = client.post("/events", json={"type": "stock-test", "n": 1})
        assert stored.status_code == 200
        listed = client.get("/events", params={"type": "stock-test"}).json()
        assert listed["count"] >= 1 and listed["last"][0]["n"] == 1
        assert client.post("/events", json={"no": "type"}).status_code == 400
