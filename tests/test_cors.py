"""CORS end to end: preflights answered by the gateway, simple requests marked, a disallowed
origin left without CORS headers; a real gateway process and the catalog service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.guarded import Guarded, guarded_gateway
from tests.processes import Running

SHOP = "https://shop.example"
CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}"}}
auth:
  users: {{kind: jwt, secret: "0123456789abcdef0123456789abcdef", algorithms: [HS256]}}
cors:
  allow_origins: [{shop}]
  allow_methods: [GET, POST]
  allow_headers: [authorization, content-type]
  expose_headers: [x-request-id, x-gateway-complete]
  allow_credentials: true
  max_age: 10m
endpoints:
  - path: /items
    calls: [{{name: items, backend: catalog, path: /products/1}}]
  - path: /items
    method: POST
    cors: {{allow_origins: ["*"], allow_methods: [POST]}}
    calls: [{{name: items, backend: catalog, path: /products/1}}]
  - path: /private
    auth: {{use: users}}
    calls: [{{name: items, backend: catalog, path: /products/1}}]
  - path: /raw/{{rest:path}}
    proxy: {{backend: catalog, path: "/{{rest}}"}}
"""


@pytest.fixture(scope="module")
def gateway(catalog: Running, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    config = CONFIG.format(catalog=catalog.url, shop=SHOP)
    with guarded_gateway(tmp_path_factory.mktemp("cors"), config) as running:
        yield running


def preflight(gateway: Guarded, path: str, origin: str, method: str = "GET") -> dict[str, str]:
    response = gateway.http.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert "origin" in response.headers["vary"].lower()
    return dict(response.headers)


def test_a_preflight_from_an_allowed_origin_gets_204_and_the_configured_headers(
    gateway: Guarded,
) -> None:
    for path in ("/items", "/private", "/raw/products/1"):  # before auth, before any backend
        headers = preflight(gateway, path, SHOP)
        assert headers["access-control-allow-origin"] == SHOP, path
        assert headers["access-control-allow-methods"] == "GET, POST"
        assert headers["access-control-allow-headers"] == "authorization, content-type"
        assert headers["access-control-allow-credentials"] == "true"
        assert headers["access-control-max-age"] == "600"


def test_a_disallowed_origin_gets_no_cors_headers(gateway: Guarded) -> None:
    headers = preflight(gateway, "/items", "https://evil.example")
    assert not [h for h in headers if h.startswith("access-control-")]
    simple = gateway.http.get("/items", headers={"Origin": "https://evil.example"})
    assert simple.status_code == 200  # served: it is the browser that withholds it
    assert not [h for h in simple.headers if h.startswith("access-control-")]
    assert simple.headers["vary"].lower() == "origin"


def test_simple_requests_and_refusals_carry_the_origin_so_pages_can_read_them(
    gateway: Guarded,
) -> None:
    answer = gateway.http.get("/items", headers={"Origin": SHOP})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == SHOP
    assert answer.headers["access-control-allow-credentials"] == "true"
    assert answer.headers["access-control-expose-headers"] == "x-request-id, x-gateway-complete"
    refused = gateway.http.get("/private", headers={"Origin": SHOP})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == SHOP
    passthrough = gateway.http.get("/raw/products/1", headers={"Origin": SHOP})
    assert passthrough.status_code == 200
    assert passthrough.headers["access-control-allow-origin"] == SHOP
    no_origin = gateway.http.get("/items")
    assert "access-control-allow-origin" not in no_origin.headers
    assert no_origin.headers["vary"].lower() == "origin"


def test_an_endpoint_overrides_the_gateway_wide_cors(gateway: Guarded) -> None:
    # /items POST allows any origin, without credentials; its preflight says so
    headers = preflight(gateway, "/items", "https://other.example", method="POST")
    assert headers["access-control-allow-origin"] == "*"
    assert headers["access-control-allow-methods"] == "POST"
    assert "access-control-allow-credentials" not in headers
    posted = gateway.http.post("/items", headers={"Origin": "https://other.example"})
    assert posted.status_code == 200 and posted.headers["access-control-allow-origin"] == "*"


def test_options_without_a_preflight_is_still_405_where_options_is_not_served(
    gateway: Guarded,
) -> None:
    plain = gateway.http.options("/items", headers={"Origin": SHOP})
    assert plain.status_code == 405
    assert plain.headers["content-type"] == "application/problem+json"
    assert plain.headers["allow"] == "GET, POST"
