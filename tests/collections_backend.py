"""A backend for the collections tests that counts what it is asked, run as a real process:
``python -m tests.collections_backend --fd N``.

* ``GET /items?n=20[&authors=K]``: ``{"items": [...]}``, item ``i`` (1..n) with ``id``,
  ``author_id`` (``1 + (i-1) % K``, or ``i``), ``sku`` and ``tags``.
* ``GET /item/{id}[?delay=100ms][&fail=3,7][&flaky=5][&slow=2]``: one item; ids in ``fail``
  answer 503, an id in ``flaky`` answers 503 to its first request only, ids in ``slow`` take
  5 s.
* ``GET /author/{id}[?delay=]``: one author.
* ``GET /ratings?ids=1,2,3``: ratings of the even ids only (a batched call with misses).
* ``GET /doc/{name}``: a KrakenD flatmap example's input (tests/flatmap_examples.py).
* ``GET /stats``: the most requests in flight at once and the requests by route;
  ``POST /reset`` zeroes them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.cli import serve
from services.debug_routes import ORJSONResponse, error_response
from services.faults import parse_duration
from tests.flatmap_examples import EXAMPLES, NOTATION_INPUT

SLOW_SECONDS = 5.0
DOCS: dict[str, Any] = {"notation": NOTATION_INPUT, **{k: v[0] for k, v in EXAMPLES.items()}}


class Counts:
    """Requests in flight now and at most, and requests by route, since the last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.routes: Counter[str] = Counter()
        self.seen: set[str] = set()


counts = Counts()


Handler = Callable[[Request], Awaitable[Response]]


def counted(route: str, handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        counts.routes[route] += 1
        counts.in_flight += 1
        counts.peak = max(counts.peak, counts.in_flight)
        try:
            delay = request.query_params.get("delay")
            if delay:
                await asyncio.sleep(parse_duration(delay))
            return await handler(request)
        finally:
            counts.in_flight -= 1

    return wrapped


def _ids(request: Request, name: str) -> set[str]:
    return {part for part in request.query_params.get(name, "").split(",") if part}


def item(number: int, authors: int | None = None) -> dict[str, Any]:
    return {
        "id": number,
        "name": f"item {number}",
        "author_id": 1 + (number - 1) % authors if authors else number,
        "sku": number,
        "tags": [{"name": f"t{number}", "internal": True}],
        "secret": f"s{number}",
    }


async def items(request: Request) -> Response:
    n = int(request.query_params.get("n", "20"))
    authors = request.query_params.get("authors")
    listed = [item(i, int(authors) if authors else None) for i in range(1, n + 1)]
    return ORJSONResponse({"items": listed, "total": n})


async def one_item(request: Request) -> Response:
    key = request.path_params["id"]
    if key in _ids(request, "slow"):
        await asyncio.sleep(SLOW_SECONDS)
    if key in _ids(request, "fail"):
        return error_response(503, f"item {key} failed on purpose")
    if key in _ids(request, "flaky") and f"flaky:{key}" not in counts.seen:
        counts.seen.add(f"flaky:{key}")
        return error_response(503, f"item {key} fails its first request")
    return ORJSONResponse({"id": int(key), "price": 100 + int(key)})


async def author(request: Request) -> Response:
    key = int(request.path_params["id"])
    return ORJSONResponse({"id": key, "name": f"author {key}"})


async def ratings(request: Request) -> Response:
    wanted = sorted(int(i) for i in _ids(request, "ids"))
    return ORJSONResponse(
        {"ratings": [{"product_id": i, "stars": i % 5} for i in wanted if i % 2 == 0]}
    )


async def doc(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in DOCS:
        return error_response(404, f"no document {name!r}")
    return ORJSONResponse(DOCS[name])


async def stats(request: Request) -> Response:
    return ORJSONResponse({"peak": counts.peak, "routes": dict(counts.routes)})


async def reset(request: Request) -> Response:
    counts.reset()
    return ORJSONResponse({"ok": True})


app = Starlette(
    routes=[
        Route("/items", counted("items", items)),
        Route("/item/{id}", counted("item", one_item)),
        Route("/author/{id}", counted("author", author)),
        Route("/ratings", counted("ratings", ratings)),
        Route("/doc/{name}", counted("doc", doc)),
        Route("/stats", stats),
        Route("/reset", reset, methods=["POST"]),
    ]
)

if __name__ == "__main__":
    serve(app, "collections_backend", 0)
