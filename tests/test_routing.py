"""GatewayRouter.lane: the endpoint route the router would choose, or None to go the whole way."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from gateway.web.routing import EndpointRoute, GatewayRouter


class Recording:
    """An ASGI app noting the scope it was called with."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(dict(scope))
        await PlainTextResponse(self.name)(scope, receive, send)


async def livez(request: Request) -> Response:
    return PlainTextResponse("live")


PASS = Recording("pass")
ONE = Recording("one")
MOUNTED = Recording("mounted")
ROUTES = [
    Route("/livez", livez, methods=["GET"]),
    Mount("/static", MOUNTED),
    EndpointRoute("/one", ONE, methods=["POST"]),
    EndpointRoute("/one", PASS, methods=["PATCH"]),
    Route("/shadowed/{x}", livez, methods=["GET"]),
    EndpointRoute("/{first}/{rest:path}", PASS, methods=["GET", "PUT"]),
]


def scope_of(method: str, path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
    }


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _drop(message: Any) -> None:
    return None


def routed_scope(router: GatewayRouter, method: str, path: str) -> dict[str, Any] | None:
    """What the router itself hands an endpoint route's app (None: it chose another)."""
    for app in (PASS, ONE):
        app.scopes.clear()
    asyncio.run(router.app(scope_of(method, path), _no_body, _drop))
    called = [app.scopes[0] for app in (PASS, ONE) if app.scopes]
    return called[0] if called else None


@pytest.mark.parametrize(
    ("method", "path", "app"),
    [
        ("GET", "/catalog/products/1", PASS),
        ("PUT", "/catalog/a%2Fb/c", PASS),
        ("POST", "/one", ONE),
        ("PATCH", "/one", PASS),  # past a partial match (the same path, POST only)
        ("GET", "/x/", PASS),
    ],
)
def test_an_endpoint_route_is_chosen_with_the_routers_scope(
    method: str, path: str, app: Recording
) -> None:
    router = GatewayRouter(ROUTES)
    scope = scope_of(method, path)
    lane = router.lane(scope)
    assert lane is app
    routed = routed_scope(router, method, path)
    assert routed is not None
    # the same keys and values the router sets (route, endpoint, path params, router)
    assert scope == routed


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/livez"),  # an operations route
        ("GET", "/static/app.js"),  # a mount
        ("GET", "/shadowed/1"),  # a plain route before the endpoint route that also matches
        ("GET", "/one"),  # 405 there, and nothing else matches fully
        ("DELETE", "/catalog/products/1"),  # 405
        ("GET", "/nothing"),  # 404 (no endpoint route matches one segment)
    ],
)
def test_anything_else_goes_the_whole_way(method: str, path: str) -> None:
    router = GatewayRouter(ROUTES)
    scope = scope_of(method, path)
    assert router.lane(scope) is None
    assert "route" not in scope and "endpoint" not in scope
    assert routed_scope(router, method, path) is None


def test_a_route_under_a_root_path_is_found_by_its_route_path() -> None:
    router = GatewayRouter(ROUTES)
    scope = {**scope_of("GET", "/api/catalog/x"), "root_path": "/api"}
    assert router.lane(scope) is PASS
    assert scope["path_params"] == {"first": "catalog", "rest": "x"}


def test_a_change_of_routes_is_seen() -> None:
    router = GatewayRouter(ROUTES)
    assert router.lane(scope_of("POST", "/one")) is ONE
    router.routes = [EndpointRoute("/one", PASS, methods=["POST"])]
    assert router.lane(scope_of("POST", "/one")) is PASS
    router.routes.insert(0, Route("/one", livez, methods=["POST"]))
    assert router.lane(scope_of("POST", "/one")) is None
