"""A passthrough route as a plain ASGI app (web/proxy.py's PassthroughApp), with and without
route steps in front of it (web/steps.py's `app_route`), in process against the catalog."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from gateway.backends.http import HttpUpstream, open_session
from gateway.config.models import ProxySpec
from gateway.engine.context import RequestContext
from gateway.engine.templates import parse_template
from gateway.web.forwarding import Forwarding
from gateway.web.problems import problem
from gateway.web.proxy import passthrough_app, plain_parts
from gateway.web.steps import Step, add_response_headers, app_route
from tests.processes import Running

LIMIT = 1000


async def adds_headers(request: Request, context: RequestContext) -> RequestContext | Response:
    add_response_headers(request, [(b"x-step", b"ran"), (b"vary", b"Origin")])
    if request.headers.get("x-refuse"):
        return problem(403, "refused by the step")
    return context


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    opened = open_session()
    yield opened
    await opened.close()


def client(session: aiohttp.ClientSession, base_url: str, steps: list[Step]) -> httpx.AsyncClient:
    forwarding = Forwarding()
    upstream = HttpUpstream("catalog", session, (base_url,), asyncio.Semaphore(4), 4)
    app = passthrough_app(
        "/raw/{rest:path}",
        ProxySpec(backend="catalog", path="/{rest}"),
        upstream,
        5.0,
        LIMIT,
        forwarding,
    )
    route = app_route("/raw/{rest:path}", ["GET", "POST"], steps, app, forwarding)
    transport = httpx.ASGITransport(app=Starlette(routes=[route]))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


async def test_without_steps_the_app_is_the_route_and_answers_whole(
    catalog: Running, session: aiohttp.ClientSession
) -> None:
    async with client(session, catalog.url, []) as http:
        answer = await http.get("/raw/products/2")
        assert answer.status_code == 200
        assert answer.json()["id"] == 2
        assert int(answer.headers["content-length"]) == len(answer.content)
        assert "x-step" not in answer.headers
        # the declared body over the limit: 413 first, before the path or the upstream
        large = await http.post("/raw/products/2", content=b"x" * (LIMIT + 1))
        assert large.status_code == 413
        assert large.json()["detail"] == f"request body is larger than {LIMIT} bytes"


async def test_the_headers_steps_add_go_onto_every_answer_of_the_app(
    catalog: Running, session: aiohttp.ClientSession
) -> None:
    async with client(session, catalog.url, [adds_headers]) as http:
        answer = await http.get("/raw/products/2")
        assert answer.status_code == 200 and answer.json()["id"] == 2
        assert answer.headers["x-step"] == "ran"
        assert answer.headers["vary"] == "Origin"
        large = await http.post("/raw/products/2", content=b"x" * (LIMIT + 1))
        assert large.status_code == 413
        assert large.headers["x-step"] == "ran"
        refused = await http.get("/raw/products/2", headers={"x-refuse": "1"})
        assert refused.status_code == 403
        assert refused.headers["x-step"] == "ran"
        # an unreachable upstream: the app's own problem carries them too
    async with client(session, "http://127.0.0.1:9", [adds_headers]) as http:
        unreachable = await http.get("/raw/products/2")
        assert unreachable.status_code == 502
        assert unreachable.headers["x-step"] == "ran"


def test_a_plain_path_template_is_filled_by_a_join_anything_else_by_render_text() -> None:
    names = ["version", "rest"]
    plain = plain_parts(parse_template("/api/{version}/x/{rest}"), names)
    assert plain == ((False, "/api/"), (True, "version"), (False, "/x/"), (True, "rest"))
    assert plain_parts(parse_template("/{rest|default:none}"), names) is None
    assert plain_parts(parse_template("/{other}"), names) is None  # not a path parameter
    assert plain_parts(parse_template("/{query.page}"), names) is None


async def test_both_fillings_send_the_same_upstream_path(
    catalog: Running, session: aiohttp.ClientSession
) -> None:
    upstream = HttpUpstream("catalog", session, (catalog.url,), asyncio.Semaphore(4), 4)
    forwarding = Forwarding()
    routes = []
    for prefix, template in (("plain", "/products/{id}"), ("filtered", "/products/{id|default:1}")):
        app = passthrough_app(
            f"/{prefix}/{{id}}",
            ProxySpec(backend="catalog", path=template),
            upstream,
            5.0,
            LIMIT,
            forwarding,
        )
        assert (app.parts is None) == (prefix == "filtered")
        routes.append(app_route(f"/{prefix}/{{id}}", ["GET"], [], app, forwarding))
    transport = httpx.ASGITransport(app=Starlette(routes=routes))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        for prefix in ("plain", "filtered"):
            answer = await http.get(f"/{prefix}/3")
            assert answer.status_code == 200 and answer.json()["id"] == 3
            climbing = await http.get(f"/{prefix}/%2e%2e")
            assert climbing.status_code == 400
