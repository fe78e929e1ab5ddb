"""Catalog demo service: 1,000 products and 100 authors, generated deterministically from their ids.

Also mounts the passthrough debug routes (echo-path, upload, blob, headers) used by the gateway's
end-to-end tests. Run with ``python -m services.catalog --port 8101``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.cli import serve
from services.debug_routes import (
    COMMON_ROUTES,
    EXCEPTION_HANDLERS,
    PASSTHROUGH_ROUTES,
    ORJSONResponse,
    error_response,
)
from services.faults import FaultInjection

PRODUCT_COUNT = 1000
AUTHOR_COUNT = 100
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

_ADJECTIVES = ("Sturdy", "Compact", "Vintage", "Modern", "Rustic", "Sleek", "Handmade", "Classic")
_MATERIALS = ("Oak", "Walnut", "Steel", "Linen", "Ceramic", "Bamboo", "Copper", "Glass")
_NOUNS = ("Lamp", "Chair", "Shelf", "Vase", "Desk", "Stool", "Mirror", "Clock", "Rug", "Bowl")
_TAGS = ("home", "office", "outdoor", "gift", "eco", "sale", "new", "bestseller")
_FIRST_NAMES = ("Ada", "Bruno", "Chiara", "Dmitri", "Elif", "Farah", "Goran", "Hana", "Ivo", "Jun")
_LAST_NAMES = ("Abe", "Berg", "Costa", "Dahl", "Eco", "Fox", "Garcia", "Horvat", "Ito", "Jensen")
_COUNTRIES = ("DE", "FR", "IT", "JP", "NO", "PT", "SE", "US")


def stable_int(salt: str, key: int, modulus: int) -> int:
    """Deterministic pseudo-random integer in ``[0, modulus)`` for (salt, key).

    A hash rather than `random` or `hash()`: it is identical in every process and Python version,
    so each service process and each test computes the same data with no shared state.
    """
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % modulus


def author(author_id: int) -> dict[str, Any] | None:
    """The author with this id, or None outside 1..AUTHOR_COUNT."""
    if not 1 <= author_id <= AUTHOR_COUNT:
        return None
    # Ids 1..100 map onto the 10x10 first/last-name grid, so every author name is unique.
    first = _FIRST_NAMES[(author_id - 1) % len(_FIRST_NAMES)]
    last = _LAST_NAMES[(author_id - 1) // len(_FIRST_NAMES)]
    return {
        "id": author_id,
        "name": f"{first} {last}",
        "country": _COUNTRIES[stable_int("author.country", author_id, len(_COUNTRIES))],
    }


def product(product_id: int) -> dict[str, Any] | None:
    """The product with this id, or None outside 1..PRODUCT_COUNT."""
    if not 1 <= product_id <= PRODUCT_COUNT:
        return None
    name = " ".join(
        (
            _ADJECTIVES[stable_int("product.adjective", product_id, len(_ADJECTIVES))],
            _MATERIALS[stable_int("product.material", product_id, len(_MATERIALS))],
            _NOUNS[stable_int("product.noun", product_id, len(_NOUNS))],
        )
    )
    tag_count = 1 + stable_int("product.tag_count", product_id, 3)
    tags = sorted(
        {_TAGS[stable_int(f"product.tag{n}", product_id, len(_TAGS))] for n in range(tag_count)}
    )
    author_id = 1 + stable_int("product.author", product_id, AUTHOR_COUNT)
    return {
        "id": product_id,
        "name": name,
        "price_cents": 100 * (1 + stable_int("product.price", product_id, 500)) - 1,
        "author_id": author_id,
        "tags": tags,
        "dimensions": {
            "width_mm": 50 + stable_int("product.width", product_id, 950),
            "height_mm": 50 + stable_int("product.height", product_id, 950),
        },
        "description": f"{name}, catalog item {product_id}, designed by author {author_id}.",
    }


def _query_int(request: Request, name: str, default: int) -> int | None:
    """A non-negative integer query parameter, the default if absent, None if malformed."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    return int(raw) if raw.isascii() and raw.isdigit() else None


async def get_product(request: Request) -> Response:
    """GET /products/{id}: one product, or a JSON 404."""
    product_id: int = request.path_params["product_id"]
    found = product(product_id)
    if found is None:
        return error_response(404, f"product {product_id} not found")
    return ORJSONResponse(found)


async def list_products(request: Request) -> Response:
    """GET /products?limit=&offset=: a page of products in id order."""
    limit = _query_int(request, "limit", DEFAULT_PAGE_SIZE)
    offset = _query_int(request, "offset", 0)
    if limit is None or offset is None or limit > MAX_PAGE_SIZE:
        return error_response(
            400, f"limit must be 0-{MAX_PAGE_SIZE} and offset a non-negative integer"
        )
    first = offset + 1
    last = min(offset + limit, PRODUCT_COUNT)
    items = [product(product_id) for product_id in range(first, last + 1)]
    return ORJSONResponse({"items": items, "total": PRODUCT_COUNT})


async def get_author(request: Request) -> Response:
    """GET /authors/{id}: one author, or a JSON 404."""
    author_id: int = request.path_params["author_id"]
    found = author(author_id)
    if found is None:
        return error_response(404, f"author {author_id} not found")
    return ORJSONResponse(found)


def create_app(seed: int | None = 0) -> Starlette:
    """Build the catalog app; `seed` seeds the fault-injection RNG."""
    # The int convertor makes non-numeric ids miss the route, which the shared handler turns
    # into the same JSON 404 shape as an unknown numeric id.
    routes = [
        Route("/products", list_products, methods=["GET"]),
        Route("/products/{product_id:int}", get_product, methods=["GET"]),
        Route("/authors/{author_id:int}", get_author, methods=["GET"]),
        *COMMON_ROUTES,
        *PASSTHROUGH_ROUTES,
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(FaultInjection, seed=seed)],
        exception_handlers=EXCEPTION_HANDLERS,
    )


app = create_app()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the catalog service under uvicorn."""
    serve(app, "catalog", 8101, argv)


if __name__ == "__main__":
    main()
