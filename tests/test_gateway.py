"""The gateway core end to end: real catalog/reviews processes, a real gateway process."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from services.catalog import product
from services.debug_routes import blob_chunks
from tests.processes import Running, start_gateway

CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}", timeout: 2s}}
  reviews: {{kind: http, url: "{reviews}", timeout: 2s}}
  single: {{kind: http, url: "{catalog}", timeout: 2s, max_connections: 1}}
endpoints:
  - path: /merge/{{id}}
    calls:
      - name: product
        backend: catalog
        path: /products/{{id}}
        allow: [id, name, price_cents, dimensions.width_mm]
        rename: {{price_cents: price}}
      - name: author
        backend: catalog
        path: /authors/{{calls.product.author_id}}
        needs: [product]
        deny: [id]
        group: author
      - name: reviews
        backend: reviews
        path: /reviews
        query: {{product: "{{id}}"}}
        group: reviews
  - path: /collide
    forward_query: [delay]
    calls:
      - {{name: first, backend: catalog, path: /products/1, query: {{delay: "{{query.first_delay}}"}}}}
      - {{name: second, backend: catalog, path: /products/2, query: {{delay: "{{query.second_delay}}"}}}}
  - path: /list
    calls:
      - {{name: items, backend: catalog, path: /products, target: items, allow: [id]}}
      - {{name: total, backend: catalog, path: /products, target: total}}
  - path: /partial/{{id}}
    error_details: true
    calls:
      - {{name: product, backend: catalog, path: "/products/{{id}}", required: true, allow: [id]}}
      - name: reviews
        backend: reviews
        path: /reviews
        query: {{product: "{{id}}", status: "{{query.reviews_status}}"}}
        group: reviews
  - path: /allfail
    calls:
      - {{name: a, backend: catalog, path: /products/1, query: {{status: "503"}}}}
      - {{name: b, backend: reviews, path: /reviews, query: {{product: "1", status: "500"}}}}
  - path: /slow-required
    calls:
      - {{name: slow, backend: catalog, path: /products/1, query: {{delay: 3s}}, timeout: 300ms, required: true}}
      - {{name: fast, backend: catalog, path: /products/2}}
  - path: /deadline
    timeout: 400ms
    calls:
      - {{name: slow, backend: catalog, path: /products/1, query: {{delay: 5s}}, timeout: 10s}}
      - {{name: fast, backend: catalog, path: /products/2, group: fast}}
  - path: /chain
    calls:
      - {{name: a, backend: catalog, path: /products/1, query: {{delay: 200ms}}, allow: [author_id]}}
      - {{name: b, backend: catalog, path: "/authors/{{calls.a.author_id}}", query: {{delay: 200ms}}, needs: [a], group: b}}
      - {{name: side1, backend: reviews, path: /reviews, query: {{product: "1", delay: 300ms}}, group: s1}}
      - {{name: side2, backend: reviews, path: /reviews, query: {{product: "2", delay: 300ms}}, group: s2}}
  - path: /skip
    calls:
      - {{name: a, backend: catalog, path: /products/1, query: {{status: "500"}}}}
      - {{name: b, backend: catalog, path: "/authors/{{calls.a.author_id}}", needs: [a], group: b}}
      - {{name: c, backend: reviews, path: /reviews, query: {{product: "1"}}, group: c}}
  - path: /echo/{{value}}
    calls:
      - {{name: echo, backend: catalog, path: "/echo-path/x/{{value}}"}}
  - path: /headers
    forward_headers: [x-custom, accept-language]
    calls:
      - {{name: seen, backend: catalog, path: /headers, group: seen}}
  - path: /api/catalog/{{rest:path}}
    proxy: {{backend: catalog, path: "/{{rest}}"}}
  - path: /single/{{rest:path}}
    proxy: {{backend: single, path: "/{{rest}}"}}
  - path: /big/{{rest:path}}
    max_body: 64MiB
    proxy: {{backend: catalog, path: "/{{rest}}"}}
"""


@pytest.fixture(scope="module")
def gateway(
    catalog: Running, reviews: Running, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    path = tmp_path_factory.mktemp("gw") / "gateway.yaml"
    path.write_text(CONFIG.format(catalog=catalog.url, reviews=reviews.url))
    running = start_gateway(path)
    yield running
    assert running.stop() == 0


@pytest.fixture
def http(gateway: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


def test_merge_applies_allow_rename_group_and_needs(http: httpx.Client) -> None:
    response = http.get("/merge/42")
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-complete"] == "true"
    expected_product = product(42)
    assert expected_product is not None
    body = response.json()
    assert body["id"] == 42
    assert body["price"] == expected_product["price_cents"]
    assert "price_cents" not in body and "author_id" not in body and "tags" not in body
    assert body["dimensions"] == {"width_mm": expected_product["dimensions"]["width_mm"]}
    assert set(body["author"]) == {"name", "country"}  # `deny: [id]` removed the id
    assert body["reviews"]["product"] == 42


@pytest.mark.parametrize(("first_delay", "second_delay"), [("300ms", "0ms"), ("0ms", "300ms")])
def test_later_call_wins_collisions_whatever_arrives_last(
    http: httpx.Client, first_delay: str, second_delay: str
) -> None:
    body = http.get(
        "/collide", params={"first_delay": first_delay, "second_delay": second_delay}
    ).json()
    assert body["id"] == 2  # `second` is listed later, so it wins even when it arrives first


def test_non_object_result_goes_under_the_call_name(http: httpx.Client) -> None:
    body = http.get("/list").json()
    assert body["total"] == 1000
    assert body["items"][:3] == [{"id": 1}, {"id": 2}, {"id": 3}]


def test_partial_response_marks_incomplete_and_details_errors(http: httpx.Client) -> None:
    response = http.get("/partial/7", params={"reviews_status": "503"})
    assert response.status_code == 200
    assert response.headers["x-gateway-complete"] == "false"
    body = response.json()
    assert body["id"] == 7 and "reviews" not in body
    assert body["_errors"]["reviews"]["status"] == 503


def test_required_call_failure_is_502_problem(http: httpx.Client) -> None:
    response = http.get("/partial/5000")  # no such product: 404 upstream
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 502 and "product" in problem["detail"]
    assert problem["failed_calls"]["product"]["status"] == 404


def test_every_call_failing_is_502(http: httpx.Client) -> None:
    response = http.get("/allfail")
    assert response.status_code == 502
    assert set(response.json()["failed_calls"]) == {"a", "b"}


def test_required_timeout_is_504_on_time(http: httpx.Client) -> None:
    started = time.monotonic()
    response = http.get("/slow-required")
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert "slow" in response.json()["failed_calls"]
    assert elapsed < 2.5, f"took {elapsed:.2f}s; the call timeout is 0.3s and the backend delay 3s"


def test_endpoint_deadline_bounds_every_call(http: httpx.Client) -> None:
    started = time.monotonic()
    response = http.get("/deadline")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.headers["x-gateway-complete"] == "false"
    assert response.json()["fast"]["id"] == 2
    assert elapsed < 4.0, f"took {elapsed:.2f}s; the deadline is 0.4s and the backend delay 5s"


def test_needs_chain_runs_alongside_independent_calls(http: httpx.Client) -> None:
    response = http.get("/chain")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["b"]["id"] == body["author_id"]
    assert body["s1"]["product"] == 1 and body["s2"]["product"] == 2
    # The order is what is checked, not a time: b ran after a and used its field.
    timing = http.get("/metrics").text
    assert 'gateway_call_duration_seconds_count{call="b",endpoint="/chain",outcome="ok"}' in timing


def test_calls_needing_a_failed_call_are_skipped(http: httpx.Client) -> None:
    response = http.get("/skip")
    assert response.status_code == 200
    assert response.headers["x-gateway-complete"] == "false"
    assert set(response.json()) == {"c"}


@pytest.mark.parametrize(
    ("raw_value", "arrives_as"),
    [
        ("a%2Fb", None),  # an encoded slash cannot match a one-segment parameter: 404
        ("%2e%2e", 400),
        ("..", 400),
        ("a%5Cb", "a%5Cb"),  # a backslash stays inside the segment
        ("..%5Cadmin", 400),  # ... unless it would make a `..` segment for some upstreams
        ("%00", "%00"),
        ("x%20y", "x%20y"),
    ],
)
def test_path_values_stay_one_segment(
    gateway: Running, raw_value: str, arrives_as: str | int | None
) -> None:
    status, body = raw_get(gateway, f"/echo/{raw_value}")
    if arrives_as is None:
        assert status == 404
    elif isinstance(arrives_as, int):
        assert status == arrives_as
    else:
        assert status == 200, body
        assert httpx.Response(200, content=body).json()["raw_path"] == f"/echo-path/x/{arrives_as}"


@pytest.mark.parametrize(
    "raw_rest", ["..%2Fadmin", "%2e%2e/admin", "x/../../admin", "./products/1", "a/%2E%2E%5Cb"]
)
def test_proxy_refuses_dot_segments(gateway: Running, raw_rest: str) -> None:
    status, _ = raw_get(gateway, f"/api/catalog/echo-path/{raw_rest}")
    assert status == 400


def test_proxy_keeps_encoded_slash_inside_segment(gateway: Running) -> None:
    status, body = raw_get(gateway, "/api/catalog/echo-path/a%2Fb/c?q=1")
    assert status == 200
    echoed = httpx.Response(200, content=body).json()
    assert echoed["raw_path"] == "/echo-path/a%2Fb/c"
    assert echoed["query"] == "q=1"


def test_hop_by_hop_headers_are_not_forwarded(http: httpx.Client) -> None:
    response = http.get(
        "/api/catalog/headers",
        headers={
            "Connection": "keep-alive, X-Secret",
            "X-Secret": "s",
            "TE": "trailers",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic eA==",
            "X-Kept": "yes",
            "X-Request-ID": "req-123",
        },
    )
    seen = response.json()
    for name in ("x-secret", "te", "keep-alive", "proxy-authorization"):
        assert name not in seen, name
    assert seen["x-kept"] == "yes"
    assert seen["x-request-id"] == "req-123"
    assert response.headers["x-request-id"] == "req-123"


def test_aggregation_forwards_only_listed_headers_and_request_id(http: httpx.Client) -> None:
    response = http.get(
        "/headers", headers={"X-Custom": "1", "X-Other": "2", "X-Request-ID": "bad id!"}
    )
    seen = response.json()["seen"]
    assert seen["x-custom"] == "1" and "x-other" not in seen
    generated = response.headers["x-request-id"]
    assert generated != "bad id!" and seen["x-request-id"] == generated


def test_passthrough_streams_large_bodies_both_ways(http: httpx.Client) -> None:
    size = 20 * 1024 * 1024
    chunks = list(blob_chunks(size))
    upload = http.post("/big/upload", content=iter(chunks))  # chunked, never one buffer
    assert upload.status_code == 200, upload.text
    assert upload.json() == {"bytes": size, "sha256": hashlib.sha256(b"".join(chunks)).hexdigest()}
    digest = hashlib.sha256()
    received = 0
    with http.stream("GET", "/big/blob", params={"size": size}) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            received += len(chunk)
            digest.update(chunk)
    assert received == size
    assert digest.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_abandoned_download_gives_its_upstream_slot_back(http: httpx.Client) -> None:
    # the `single` backend allows one call in flight: a leaked slot would make the
    # next request wait its 2 s timeout and answer 503
    for _ in range(3):
        with http.stream("GET", "/single/blob", params={"size": 64 * 1024 * 1024}) as response:
            assert response.status_code == 200
            next(response.iter_bytes())  # read a little, then hang up mid-body
    assert http.get("/single/products/3").json()["id"] == 3


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    declared = http.post("/api/catalog/upload", content=b"x" * (1024 * 1024 + 1))
    assert declared.status_code == 413
    assert declared.headers["content-type"] == "application/problem+json"
    streamed = http.post("/api/catalog/upload", content=iter([b"x" * 65536] * 20))
    assert streamed.status_code == 413


def test_unknown_route_and_wrong_method_are_problems(http: httpx.Client) -> None:
    missing = http.get("/nowhere")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = http.delete("/merge/1")
    assert wrong.status_code == 405
    assert wrong.json()["status"] == 405


def test_health_and_metrics(http: httpx.Client) -> None:
    assert http.get("/livez").json() == {"status": "alive"}
    assert http.get("/readyz").status_code == 200
    http.get("/merge/1")
    text = http.get("/metrics").text
    assert 'gateway_requests_total{endpoint="/merge/{id}",method="GET",status="200"}' in text
    assert "gateway_open_connections " in text
    assert "gateway_requests_in_flight " in text


def raw_get(gateway: Running, target: str) -> tuple[int, bytes]:
    """Send a request line exactly as written: no client-side normalisation of `..` or `%2F`."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, body


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, data = out + rest[:size], rest[size + 2 :]
    return out
