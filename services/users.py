"""Users demo service: orders of a user, read from the demo PostgreSQL (see services/userdb.py),
and the stock reservations and events of the demo's write path (services/stock.py).

The gateway reads the `users` table itself (a postgres backend); this service is the HTTP side
of the same data, so one demo endpoint can fan out to SQL and HTTP at once.
Run with ``python -m services.users --dsn postgresql://... --port 8105``.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.cli import serve
from services.debug_routes import COMMON_ROUTES, EXCEPTION_HANDLERS, ORJSONResponse, error_response
from services.faults import FaultInjection
from services.stock import stock_routes

ORDERS_SQL = """
SELECT id, total::text AS total, status, placed_at
FROM orders WHERE user_id = $1 ORDER BY id
"""


def create_app(dsn: str, seed: int | None = 0) -> Starlette:
    """The users app; its pool opens with the app's lifespan and closes with it."""
    pools: dict[str, asyncpg.Pool] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with asyncpg.create_pool(dsn, min_size=1, max_size=10) as pool:
            pools["db"] = pool
            yield

    async def list_orders(request: Request) -> Response:
        """GET /orders?user=ID: the user's orders, oldest first."""
        raw = request.query_params.get("user", "")
        if not (raw.isascii() and raw.isdigit()) or int(raw) >= 2**63:
            return error_response(400, "user must be a non-negative integer id")
        rows = await pools["db"].fetch(ORDERS_SQL, int(raw))
        orders: list[dict[str, Any]] = [
            {**dict(row), "placed_at": row["placed_at"].isoformat()} for row in rows
        ]
        return ORJSONResponse({"user": int(raw), "count": len(orders), "orders": orders})

    return Starlette(
        routes=[
            Route("/orders", list_orders, methods=["GET"]),
            *stock_routes(lambda: pools["db"]),
            *COMMON_ROUTES,
        ],
        middleware=[Middleware(FaultInjection, seed=seed)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the users service under uvicorn; `--dsn` names the database."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--dsn", required=True)
    known, rest = parser.parse_known_args(argv)
    serve(create_app(known.dsn), "users", 8105, rest)


if __name__ == "__main__":
    main()
