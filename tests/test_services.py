"""In-process tests for the demo backend services: data, errors, faults and debug routes."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from services import catalog, reviews
from services.debug_routes import BLOB_CHUNK_SIZE, blob_chunks
from services.faults import parse_duration


# httpx.ASGITransport rather than starlette.testclient: Starlette 1.10's TestClient warns that
# plain httpx is deprecated, and warnings are errors in this suite.
def make_client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def catalog_client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(catalog.create_app(seed=0)) as client:
        yield client


@pytest.fixture
async def reviews_client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(reviews.create_app(seed=0)) as client:
        yield client


# --- catalog data ---------------------------------------------------------------------------


async def test_product_shape_and_determinism(catalog_client: httpx.AsyncClient) -> None:
    response = await catalog_client.get("/products/42")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == catalog.product(42)
    assert set(body) == {
        "id",
        "name",
        "price_cents",
        "author_id",
        "tags",
        "dimensions",
        "description",
    }
    assert body["id"] == 42
    assert 1 <= body["author_id"] <= catalog.AUTHOR_COUNT
    assert body["price_cents"] % 100 == 99
    assert body["tags"] == sorted(set(body["tags"]))
    assert 1 <= len(body["tags"]) <= 3
    assert set(body["dimensions"]) == {"width_mm", "height_mm"}
    # A second, independently built app must serve byte-identical data.
    async with make_client(catalog.create_app(seed=123)) as other:
        assert (await other.get("/products/42")).content == response.content


def test_products_differ_by_id() -> None:
    products = [catalog.product(i) for i in range(1, catalog.PRODUCT_COUNT + 1)]
    assert all(p is not None for p in products)
    assert len({(p["name"], p["price_cents"], p["author_id"]) for p in products if p}) > 900
    assert {p["author_id"] for p in products if p} == set(range(1, catalog.AUTHOR_COUNT + 1))


@pytest.mark.parametrize("path", ["/products/0", "/products/1001", "/products/abc", "/products/-1"])
async def test_unknown_product_is_json_404(catalog_client: httpx.AsyncClient, path: str) -> None:
    response = await catalog_client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["error"], str)


async def test_product_listing_pages(catalog_client: httpx.AsyncClient) -> None:
    response = await catalog_client.get("/products", params={"limit": 3, "offset": 998})
    body = response.json()
    assert body["total"] == 1000
    assert [item["id"] for item in body["items"]] == [999, 1000]
    assert body["items"][0] == catalog.product(999)
    default = (await catalog_client.get("/products")).json()
    assert [item["id"] for item in default["items"]] == list(range(1, 21))
    for bad in ({"limit": "x"}, {"limit": "101"}, {"offset": "-1"}):
        assert (await catalog_client.get("/products", params=bad)).status_code == 400


async def test_authors(catalog_client: httpx.AsyncClient) -> None:
    body = (await catalog_client.get("/authors/1")).json()
    assert body == {"id": 1, "name": "Ada Abe", "country": body["country"]}
    assert body["country"] in {"DE", "FR", "IT", "JP", "NO", "PT", "SE", "US"}
    authors = [catalog.author(i) for i in range(1, catalog.AUTHOR_COUNT + 1)]
    assert len({a["name"] for a in authors if a}) == catalog.AUTHOR_COUNT
    assert (await catalog_client.get("/authors/101")).status_code == 404


# --- reviews ----------------------------------------------------------------------------------


async def test_reviews_deterministic_and_consistent(reviews_client: httpx.AsyncClient) -> None:
    counts = set()
    for product_id in range(1, 51):
        response = await reviews_client.get("/reviews", params={"product": product_id})
        body = response.json()
        assert body["product"] == product_id
        assert body["reviews"] == reviews.reviews_for(product_id)
        ratings = [r["rating"] for r in body["reviews"]]
        assert all(1 <= rating <= 5 for rating in ratings)
        expected = round(sum(ratings) / len(ratings), 2) if ratings else 0.0
        assert body["average"] == expected
        counts.add(len(ratings))
    # 0-5 reviews per product, and the generator actually uses that whole range.
    assert counts == {0, 1, 2, 3, 4, 5}


async def test_reviews_author_filter(reviews_client: httpx.AsyncClient) -> None:
    product_id = next(i for i in range(1, 1001) if len(reviews.reviews_for(i)) == 5)
    everyone = reviews.reviews_for(product_id)
    author_id = everyone[0]["author_id"]
    params = {"product": product_id, "author": author_id}
    kept = (await reviews_client.get("/reviews", params=params)).json()["reviews"]
    assert kept == [r for r in everyone if r["author_id"] == author_id]
    assert kept


async def test_reviews_errors(reviews_client: httpx.AsyncClient) -> None:
    assert (await reviews_client.get("/reviews")).status_code == 400
    assert (await reviews_client.get("/reviews", params={"product": "x"})).status_code == 400
    assert (await reviews_client.get("/reviews", params={"product": 1001})).status_code == 404
    assert (await reviews_client.get("/nope")).json() == {"error": "Not Found"}


# --- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("2s", 2.0), ("0.5", 0.5), ("0", 0.0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


async def test_delay_from_query_and_header(catalog_client: httpx.AsyncClient) -> None:
    started = time.perf_counter()
    assert (await catalog_client.get("/livez", params={"delay": "150ms"})).status_code == 200
    assert time.perf_counter() - started >= 0.15
    started = time.perf_counter()
    assert (await catalog_client.get("/livez", headers={"X-Delay": "0.15"})).status_code == 200
    assert time.perf_counter() - started >= 0.15


async def test_fail_always_and_never(catalog_client: httpx.AsyncClient) -> None:
    response = await catalog_client.get("/products/1", params={"fail": "1"})
    assert response.status_code == 503
    assert response.json() == {"error": "injected failure"}
    assert response.headers["x-fault-injected"] == "fail"
    response = await catalog_client.get("/products/1", headers={"X-Fail": "1"})
    assert response.status_code == 503
    assert (await catalog_client.get("/products/1", params={"fail": "0"})).status_code == 200


async def fail_pattern(seed: int) -> list[int]:
    async with make_client(reviews.create_app(seed=seed)) as client:
        return [
            (await client.get("/livez", params={"fail": "0.3"})).status_code for _ in range(200)
        ]


async def test_fail_share_is_seeded() -> None:
    pattern = await fail_pattern(seed=7)
    assert 30 <= pattern.count(503) <= 90  # ~60 expected
    assert pattern.count(200) + pattern.count(503) == 200
    assert await fail_pattern(seed=7) == pattern
    assert await fail_pattern(seed=8) != pattern


async def test_forced_status_wins_over_fail(catalog_client: httpx.AsyncClient) -> None:
    response = await catalog_client.get("/products/1", params={"status": "418", "fail": "1"})
    assert response.status_code == 418
    assert response.json() == {"error": "injected status"}
    assert response.headers["x-fault-injected"] == "status"
    assert (await catalog_client.get("/livez", headers={"X-Status": "502"})).status_code == 502


async def test_query_param_overrides_header(catalog_client: httpx.AsyncClient) -> None:
    response = await catalog_client.get(
        "/livez", params={"status": "500"}, headers={"X-Status": "404"}
    )
    assert response.status_code == 500


@pytest.mark.parametrize(
    "params",
    [{"delay": "soon"}, {"delay": "-1"}, {"delay": "nan"}, {"fail": "2"}, {"status": "200"}],
)
async def test_malformed_fault_controls_are_rejected(
    catalog_client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await catalog_client.get("/livez", params=params)
    assert response.status_code == 400
    assert "error" in response.json()


# --- debug routes ----------------------------------------------------------------------------


async def test_echo_path_reports_raw_and_decoded_path(catalog_client: httpx.AsyncClient) -> None:
    body = (await catalog_client.get("/echo-path/a%2Fb/c%20d?x=1&y=%20")).json()
    assert body == {
        "raw_path": "/echo-path/a%2Fb/c%20d",
        "path": "/echo-path/a/b/c d",
        "query": "x=1&y=%20",
    }


async def test_headers_route_echoes_lowercased(
    catalog_client: httpx.AsyncClient, reviews_client: httpx.AsyncClient
) -> None:
    for client in (catalog_client, reviews_client):
        response = await client.get("/headers", headers={"X-Request-ID": "abc-123"})
        body = response.json()
        assert body["x-request-id"] == "abc-123"
        assert body["host"] == "testserver"


async def test_upload_hashes_streamed_body(catalog_client: httpx.AsyncClient) -> None:
    payload = bytes(range(256)) * 1000

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 10_000):
            yield payload[start : start + 10_000]

    for method in ("POST", "PUT"):
        response = await catalog_client.request(method, "/upload", content=chunks())
        assert response.json() == {
            "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }


async def test_blob_streams_deterministic_bytes(catalog_client: httpx.AsyncClient) -> None:
    size = 3 * BLOB_CHUNK_SIZE + 17
    response = await catalog_client.get("/blob", params={"size": size})
    assert response.status_code == 200
    assert "content-length" not in response.headers  # streamed, not buffered
    assert len(response.content) == size
    assert response.content == b"".join(blob_chunks(size))
    assert response.content[250:253] == bytes([250, 0, 1])
    assert [len(c) for c in blob_chunks(size)] == [BLOB_CHUNK_SIZE] * 3 + [17]
    assert (await catalog_client.get("/blob", params={"size": "-1"})).status_code == 400
    assert (await catalog_client.get("/blob")).status_code == 400
