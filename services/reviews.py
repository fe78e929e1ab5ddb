"""Reviews demo service: 0-5 reviews per product, generated deterministically from the product id.

Run with ``python -m services.reviews --port 8102``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# The catalog owns the id spaces; reusing its constants keeps both services agreeing on
# which products and authors exist.
from services.catalog import AUTHOR_COUNT, PRODUCT_COUNT, stable_int
from services.cli import serve
from services.debug_routes import COMMON_ROUTES, EXCEPTION_HANDLERS, ORJSONResponse, error_response
from services.faults import FaultInjection

MAX_REVIEWS_PER_PRODUCT = 5
_TEXTS = {
    1: "Broke within a week.",
    2: "Not what the photos suggested.",
    3: "Does the job, nothing more.",
    4: "Solid build, would buy again.",
    5: "Exceptional quality for the price.",
}


def reviews_for(product_id: int) -> list[dict[str, Any]]:
    """All reviews of a product (possibly none); empty for ids outside the catalog."""
    if not 1 <= product_id <= PRODUCT_COUNT:
        return []
    count = stable_int("reviews.count", product_id, MAX_REVIEWS_PER_PRODUCT + 1)
    reviews = []
    for n in range(count):
        key = product_id * 10 + n  # n < 10, so this is also a globally unique review id
        rating = 1 + stable_int("review.rating", key, 5)
        reviews.append(
            {
                "id": key,
                "rating": rating,
                "text": _TEXTS[rating],
                "author_id": 1 + stable_int("review.author", key, AUTHOR_COUNT),
            }
        )
    return reviews


def _positive_int(raw: str | None) -> int | None:
    return int(raw) if raw is not None and raw.isascii() and raw.isdigit() else None


async def list_reviews(request: Request) -> Response:
    """GET /reviews?product=ID[&author=ID]: a product's reviews, optionally by one author."""
    product_id = _positive_int(request.query_params.get("product"))
    if product_id is None:
        return error_response(400, "product must be a non-negative integer")
    if not 1 <= product_id <= PRODUCT_COUNT:
        return error_response(404, f"product {product_id} not found")
    reviews = reviews_for(product_id)
    raw_author = request.query_params.get("author")
    if raw_author is not None:
        author_id = _positive_int(raw_author)
        if author_id is None:
            return error_response(400, "author must be a non-negative integer")
        reviews = [review for review in reviews if review["author_id"] == author_id]
    # The body shape promises a float, so no reviews averages to 0.0 rather than null.
    average = round(sum(r["rating"] for r in reviews) / len(reviews), 2) if reviews else 0.0
    return ORJSONResponse({"product": product_id, "reviews": reviews, "average": average})


def create_app(seed: int | None = 0) -> Starlette:
    """Build the reviews app; `seed` seeds the fault-injection RNG."""
    return Starlette(
        routes=[Route("/reviews", list_reviews, methods=["GET"]), *COMMON_ROUTES],
        middleware=[Middleware(FaultInjection, seed=seed)],
        exception_handlers=EXCEPTION_HANDLERS,
    )


app = create_app()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the reviews service under uvicorn."""
    serve(app, "reviews", 8102, argv)


if __name__ == "__main__":
    main()
