"""The demo database: `users`, `orders`, `stock` and `events` tables, created and seeded
idempotently.

`prepare(dsn)` is safe to run on every start and from several processes at once (an
advisory lock serialises it): it creates what is missing and seeds deterministically from
the ids alone (no random numbers), so every run, test and machine sees the same rows.
Run it alone with `python -m services.userdb --dsn postgresql://...`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from decimal import Decimal

import asyncpg

from services.catalog import PRODUCT_COUNT, product

USER_COUNT = 100_000
SCHEMA_VERSION = 1
_LOCK_KEY = 0x66616E6F  # "fano": one advisory lock for the demo schema

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id          bigint PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL,
    birthday    date,
    active      boolean NOT NULL,
    balance     numeric(12, 2) NOT NULL,
    external_id uuid NOT NULL,
    avatar      bytea
);
CREATE TABLE IF NOT EXISTS orders (
    id        bigint PRIMARY KEY,
    user_id   bigint NOT NULL REFERENCES users (id),
    total     numeric(10, 2) NOT NULL,
    status    text NOT NULL,
    placed_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_user_id ON orders (user_id);
CREATE TABLE IF NOT EXISTS demo_schema (version int NOT NULL, users bigint NOT NULL);
-- the write path of the demo (POST /api/orders): stock reservations, new orders, events
CREATE TABLE IF NOT EXISTS stock (
    sku        bigint PRIMARY KEY,
    available  int NOT NULL CHECK (available >= 0),
    unit_price numeric(10, 2) NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
    id         bigserial PRIMARY KEY,
    sku        bigint NOT NULL REFERENCES stock (sku),
    quantity   int NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS events (
    id          bigserial PRIMARY KEY,
    type        text NOT NULL,
    payload     jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
-- new orders' ids start past every seeded one (user * 10 + n)
CREATE SEQUENCE IF NOT EXISTS order_ids START WITH 100000000;
"""

SHORT_STOCK_EVERY = 13
"""Every 13th sku has only `SHORT_STOCK` units, so the demo can show a 409 (sku 13: 3 left)."""
SHORT_STOCK = 3
STOCK_PER_SKU = 1000

SEED_STOCK = """
INSERT INTO stock (sku, available, unit_price)
SELECT * FROM unnest($1::bigint[], $2::int[], $3::numeric[])
ON CONFLICT (sku) DO NOTHING
"""

# Every value is a function of the id: md5 gives stable pseudo-random bits in SQL.
SEED_USERS = """
INSERT INTO users (id, name, email, created_at, birthday, active, balance, external_id, avatar)
SELECT
    i,
    (ARRAY['Ada','Bruno','Chiara','Dmitri','Elif','Farah','Goran','Hana','Ivo','Jun'])
        [1 + i % 10]
    || ' ' ||
    (ARRAY['Abe','Berg','Costa','Dahl','Eco','Fox','Garcia','Horvat','Ito','Jensen'])
        [1 + (i / 10) % 10],
    'user' || i || '@example.com',
    timestamptz '2020-01-01 00:00:00+00' + (i * interval '17 minutes'),
    date '1950-01-01' + ((i * 7919) % 20000)::int,
    i % 7 <> 0,
    ((i * 7919) % 1000000) / 100.0,
    md5('user:' || i)::uuid,
    decode(substr(md5('avatar:' || i), 1, 8), 'hex')
FROM generate_series(1, $1::bigint) AS i
ON CONFLICT (id) DO NOTHING
"""

SEED_ORDERS = """
INSERT INTO orders (id, user_id, total, status, placed_at)
SELECT
    u * 10 + n,
    u,
    ((u * 31 + n * 17) % 50000) / 100.0 + 1,
    (ARRAY['placed','paid','shipped','delivered'])[1 + (u + n) % 4],
    timestamptz '2021-01-01 00:00:00+00' + ((u * 10 + n) * interval '7 minutes')
FROM generate_series(1, $1::bigint) AS u, generate_series(1, 3) AS n
WHERE n <= u % 4
ON CONFLICT (id) DO NOTHING
"""


async def prepare(dsn: str, users: int = USER_COUNT) -> None:
    """Create the schema and seed `users` users (0-3 orders each) unless already done."""
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            await connection.execute(SCHEMA)
            await _seed_stock(connection)
            done = await connection.fetchval(
                "SELECT count(*) FROM demo_schema WHERE version = $1 AND users >= $2",
                SCHEMA_VERSION,
                users,
            )
            if done:
                return
            await connection.execute(SEED_USERS, users)
            await connection.execute(SEED_ORDERS, users)
            await connection.execute("DELETE FROM demo_schema")
            await connection.execute(
                "INSERT INTO demo_schema (version, users) VALUES ($1, $2)", SCHEMA_VERSION, users
            )
        await connection.execute("ANALYZE users; ANALYZE orders")
    finally:
        await connection.close()


async def _seed_stock(connection: asyncpg.Connection) -> None:
    """One stock row per catalog product, priced as the catalog prices it."""
    skus = list(range(1, PRODUCT_COUNT + 1))
    available = [SHORT_STOCK if sku % SHORT_STOCK_EVERY == 0 else STOCK_PER_SKU for sku in skus]
    prices = [Decimal((product(sku) or {})["price_cents"]) / 100 for sku in skus]
    await connection.execute(SEED_STOCK, skus, available, prices)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.userdb", description=__doc__)
    parser.add_argument("--dsn", required=True, help="postgresql://... of the database")
    parser.add_argument("--users", type=int, default=USER_COUNT)
    args = parser.parse_args(argv)
    asyncio.run(prepare(args.dsn, args.users))


if __name__ == "__main__":
    main()
