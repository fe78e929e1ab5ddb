"""Stock reservations and order events: the write side of the demo, on the users service.

* ``POST /reservations`` with ``{"sku": N, "quantity": Q, ...}`` (the client's order, as the
  gateway forwards it): takes Q units of sku N in one statement, so two orders can never both
  take the last unit. 200 ``{"id", "sku", "quantity", "unit_price", "total", "available"}``;
  409 ``application/problem+json`` when fewer than Q are left; 404 for an unknown sku.
* ``POST /events`` with any JSON object that has a ``type``: stored (the gateway's
  background analytics call). ``GET /events[?type=T]``: how many, and the last ten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.debug_routes import ORJSONResponse, error_response

RESERVE_SQL = """
WITH taken AS (
    UPDATE stock SET available = available - $2
    WHERE sku = $1 AND available >= $2
    RETURNING sku, available, unit_price
)
INSERT INTO reservations (sku, quantity)
SELECT sku, $2 FROM taken
RETURNING id, (SELECT available FROM taken), (SELECT unit_price FROM taken)
"""

Pool = Callable[[], asyncpg.Pool]


def stock_routes(pool: Pool) -> list[Route]:
    """The routes, reading the service's pool (opened by its lifespan) through `pool`."""

    async def reserve(request: Request) -> Response:
        order = await _json_object(request)
        if order is None:
            return error_response(400, "the body must be a JSON object")
        sku, quantity = order.get("sku"), order.get("quantity")
        if not _positive_int(sku) or not _positive_int(quantity):
            return error_response(400, "sku and quantity must be positive integers")
        async with pool().acquire() as connection:
            row = await connection.fetchrow(RESERVE_SQL, sku, quantity)
            if row is None:
                left = await connection.fetchval("SELECT available FROM stock WHERE sku = $1", sku)
        if row is None:
            if left is None:
                return error_response(404, f"unknown sku {sku}")
            return _problem(
                409, f"only {left} left of sku {sku}", sku=sku, available=left, wanted=quantity
            )
        reservation, available, unit_price = row
        return ORJSONResponse(
            {
                "id": reservation,
                "sku": sku,
                "quantity": quantity,
                "unit_price": str(unit_price),
                "total": str(unit_price * quantity),
                "available": available,
            }
        )

    async def record_event(request: Request) -> Response:
        event = await _json_object(request)
        if event is None or not isinstance(event.get("type"), str):
            return error_response(400, 'an event is a JSON object with a "type"')
        sql = "INSERT INTO events (type, payload) VALUES ($1, $2::text::jsonb) RETURNING id"
        event_id = await pool().fetchval(sql, event["type"], orjson.dumps(event).decode())
        return ORJSONResponse({"id": event_id})

    async def list_events(request: Request) -> Response:
        kind = request.query_params.get("type")
        async with pool().acquire() as connection:
            count = await connection.fetchval(
                "SELECT count(*) FROM events WHERE $1::text IS NULL OR type = $1", kind
            )
            rows = await connection.fetch(
                "SELECT id, payload::text AS payload, received_at FROM events"
                " WHERE $1::text IS NULL OR type = $1 ORDER BY id DESC LIMIT 10",
                kind,
            )
        last = [
            {
                "id": row["id"],
                "received_at": row["received_at"].isoformat(),
                **orjson.loads(row["payload"]),
            }
            for row in rows
        ]
        return ORJSONResponse({"count": count, "last": last})

    return [
        Route("/reservations", reserve, methods=["POST"]),
        Route("/events", record_event, methods=["POST"]),
        Route("/events", list_events, methods=["GET"]),
    ]


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        value = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31


def _problem(status: int, detail: str, **extra: Any) -> Response:
    body = {"type": "about:blank", "title": "Conflict", "status": status, "detail": detail}
    return Response(
        orjson.dumps({**body, **extra}),
        status_code=status,
        media_type="application/problem+json",
    )
