"""A fast JSON backend for the comparison benchmark: every path answers a ~300-byte JSON
object, after `?delay=` milliseconds when asked (the fan-out's 20 ms backend).

aiohttp's own server on uvloop: fast enough that one process on one core outruns a proxy on
the other core, so the proxies, not the backend, are what the benchmark measures.

    python -m benchmarks.upstream --port 9000
"""

from __future__ import annotations

import argparse
import asyncio

import orjson
import uvloop
from aiohttp import web

BODY = orjson.dumps(
    {
        "id": 1,
        "name": "Modern Oak Shelf",
        "price_cents": 30099,
        "author_id": 61,
        "tags": ["new", "outdoor"],
        "dimensions": {"width_mm": 766, "height_mm": 1200, "depth_mm": 300},
        "description": "A shelf of solid oak, oiled by hand, for books and plants alike.",
        "stock": {"warehouse": 12, "store": 3},
    }
)


async def answer(request: web.Request) -> web.Response:
    delay = request.query.get("delay")
    if delay:
        await asyncio.sleep(float(delay) / 1000)
    return web.Response(body=BODY, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
