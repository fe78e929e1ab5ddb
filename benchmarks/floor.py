"""The "floor": the smallest honest Python gateway, to measure fanout against.

Starlette on uvicorn (uvloop, httptools) with one shared aiohttp ClientSession: a passthrough
route, a one-call and a 3-call fan-out merging JSON, nothing else (no limits, no metrics, no
policies). The aggregations ask what benchmarks/compare.py's fanout endpoints ask (the same
paths, `?delay=20`) and answer the same body (`{"a": ...}`, `{"a": ..., "b": ..., "c": ...}`).
Whatever fanout spends beyond this is its own layers.

    python -m benchmarks.floor --upstream http://127.0.0.1:9000 --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def create_app(upstream: str) -> Starlette:
    state: dict[str, aiohttp.ClientSession] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=1024)
        async with aiohttp.ClientSession(connector=connector) as session:
            state["session"] = session
            yield

    async def passthrough(request: Request) -> Response:
        url = f"{upstream}/{request.path_params['rest']}"
        async with state["session"].get(url) as answer:
            body = await answer.read()
            return Response(body, answer.status, media_type=answer.content_type)

    async def fetch(path: str) -> object:
        async with state["session"].get(f"{upstream}{path}") as answer:
            return orjson.loads(await answer.read())

    async def one(request: Request) -> Response:
        a = await fetch("/products/1?delay=20")
        return Response(orjson.dumps({"a": a}), media_type="application/json")

    async def three(request: Request) -> Response:
        a, b, c = await asyncio.gather(
            fetch("/products/1?delay=20"),
            fetch("/products/2?delay=20"),
            fetch("/products/3?delay=20"),
        )
        return Response(orjson.dumps({"a": a, "b": b, "c": c}), media_type="application/json")

    return Starlette(
        routes=[
            Route("/pass/{rest:path}", passthrough),
            Route("/one", one),
            Route("/three", three),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.upstream.rstrip("/")),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
