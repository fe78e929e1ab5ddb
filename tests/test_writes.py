"""Writes through the gateway, end to end: a real gateway process in front of a recording
backend (tests/recorder.py) and a real PostgreSQL.

What the client sends reaches the backends as declared (byte-exact for `body: forward`,
typed JSON for body templates, `{body.x}` in paths, query, headers and SQL parameters);
a body the endpoint cannot use is refused (415/400/413, chunked too) before any call, so the
backend's request count does not move; a backend's 4xx reaches the client under
`pass_errors`; a POST is never retried unless marked idempotent; backends are told who the
client is, and a header the client's Connection names never passes.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.processes import Running, start_gateway
from tests.recorder import Answer, Recorded, Recorder, Rule

ERROR_BODY_BYTES = 1024  # GATEWAY_ERROR_BODY_BYTES of this module's gateway
ORDER_SCHEMA = {
    "type": "object",
    "required": ["total", "items"],
    "properties": {
        "total": {"type": "number", "minimum": 0},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sku"],
                "properties": {"sku": {"type": "integer"}, "quantity": {"type": "integer"}},
            },
        },
        "customer": {"$ref": "#/$defs/customer"},
    },
    "$defs": {"customer": {"type": "object", "properties": {"name": {"type": "string"}}}},
}

CONFIG = """
version: 1
backends:
  rec: {{kind: http, url: "{rec}", timeout: 5s}}
  slow: {{kind: http, url: "{rec}", timeout: 300ms}}
  flaky:
    kind: http
    url: "{rec}"
    retry: {{attempts: 3, backoff: 10ms, on: [503]}}
  db: {{kind: postgres, dsn: "{dsn}", pool: {{min: 1, max: 2}}}}
  legacy: {{kind: legacy, target: "tests.executor_targets:echo_args", threads: 1}}
endpoints:
  - path: /args
    method: POST
    calls:
      - name: legacy
        backend: legacy
        args: {{sku: "{{body.sku}}", who: "for {{body.customer.name}}", gone: "{{body.gone}}"}}
  - path: /forward
    method: POST
    forward_headers: [authorization]
    calls:
      - {{name: a, backend: rec, method: POST, path: /a, body: forward, group: a}}
      - {{name: b, backend: rec, method: PUT, path: /b, body: forward, group: b}}
  - path: /typed
    method: POST
    calls:
      - {{name: first, backend: rec, method: POST, path: /first, body: forward}}
      - name: typed
        backend: rec
        method: POST
        path: "/typed/{{body.customer.name}}"
        query: {{total: "{{body.total}}", coupon: "{{body.coupon}}"}}
        headers: {{x-customer: "{{body.customer.name}}"}}
        needs: [first]
        group: typed
        body:
          amount: "{{body.total}}"
          lines: "{{body.items}}"
          vip: "{{body.vip}}"
          nothing: "{{body.note}}"
          note: "order {{calls.first.bytes}} for {{body.customer.name}}"
          fixed: [1, "two", {{three: 3}}]
          braces: "{{{{literal}}}}"
  - path: /validated
    method: POST
    request: {{schema: order.json}}
    calls:
      - {{name: order, backend: rec, method: POST, path: /validated, body: forward}}
  - path: /inline
    method: POST
    request:
      schema: {{type: object, required: [id], properties: {{id: {{type: integer}}}}}}
    calls:
      - {{name: order, backend: rec, method: POST, path: /inline, body: {{id: "{{body.id}}"}}}}
  - path: /limited
    method: POST
    max_body: 1KiB
    calls:
      - {{name: x, backend: rec, method: POST, path: /limited, body: {{x: "{{body.x}}"}}}}
  - path: /limited-forward
    method: POST
    max_body: 1KiB
    calls:
      - {{name: x, backend: rec, method: POST, path: /limited-forward, body: forward}}
  - path: /limited-get
    max_body: 1KiB
    calls:
      - {{name: x, backend: rec, path: /limited-get}}
  - path: /sql
    method: POST
    calls:
      - name: row
        backend: db
        sql: "SELECT $1::int + 1 AS next, $2::text AS name, $3::int IS NULL AS no_quantity"
        params: ["{{body.n:int}}", "{{body.customer.name}}", "{{body.quantity:int}}"]
        result: one
  - path: /pass/{{status}}
    method: POST
    calls:
      - name: decisive
        backend: rec
        method: POST
        path: "/status/{{status}}"
        body: forward
        pass_errors: true
        required: true
      - {{name: other, backend: rec, path: /other, group: other}}
  - path: /no-pass/{{status}}
    method: POST
    calls:
      - {{name: decisive, backend: rec, method: POST, path: "/status/{{status}}", required: true}}
  - path: /pass-chain
    method: POST
    calls:
      - {{name: slow, backend: slow, path: /held, required: true}}
      - {{name: check, backend: rec, method: POST, path: /status/409, pass_errors: true}}
      - {{name: write, backend: rec, method: POST, path: /write, needs: [check], required: true}}
  - path: /post-retry
    method: POST
    forward_headers: [idempotency-key]
    calls:
      - {{name: once, backend: flaky, method: POST, path: /flaky-once, body: forward, group: a}}
      - name: again
        backend: flaky
        method: POST
        path: /flaky-again
        body: forward
        idempotent: true
        group: b
  - path: /told
    forward_headers: [x-custom, x-secret]
    calls:
      - {{name: told, backend: rec, path: /told}}
  - path: /proxied/{{rest:path}}
    proxy: {{backend: rec, path: "/{{rest}}"}}
"""


def answering(status: int, value: object) -> Rule:
    """A rule answering `value` as JSON with `status` (bound now, not when the loop ends)."""
    return lambda _: Answer.of(status, value)


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    for status in (404, 409, 422, 500, 503):
        body = {"error": f"status {status}", "field": "quantity"}
        recorder.rules[f"/status/{status}"] = answering(status, body)
    problem = {"type": "https://shop.example/out-of-stock", "title": "Out of stock", "status": 422}
    recorder.rules["/status/422"] = lambda r: Answer.of(422, problem, "application/problem+json")
    recorder.rules["/status/410"] = lambda r: Answer(410, b"<h1>Gone</h1>", "text/html")
    big = {"error": "x" * (2 * ERROR_BODY_BYTES)}
    recorder.rules["/status/413"] = lambda r: Answer.of(413, big)
    recorder.rules["/flaky-once"] = recorder.rules["/flaky-again"] = lambda r: Answer.of(
        503, {"error": "busy"}
    )
    recorder.gates["/held"] = threading.Event()  # never opened: the call times out
    with recorder.serving():
        yield recorder


@pytest.fixture(scope="module")
def gateway(
    recorder: Recorder, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("writes")
    (directory / "order.json").write_text(json.dumps(ORDER_SCHEMA))
    path = directory / "gateway.yaml"
    path.write_text(CONFIG.format(rec=recorder.url, dsn=database_url))
    running = start_gateway(path, env={"GATEWAY_ERROR_BODY_BYTES": str(ERROR_BODY_BYTES)})
    yield running
    assert running.stop() == 0


@pytest.fixture
def http(gateway: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


JSON = {"content-type": "application/json"}


# --- the body reaches the backends -----------------------------------------------------------


def test_forward_sends_the_clients_bytes_to_every_call_unchanged(
    http: httpx.Client, recorder: Recorder
) -> None:
    # odd spacing, key order and non-ASCII: anything re-encoded would differ
    body = '{ "z":1,  "a" : [1.50, "é\\u00e9"],\n"n":null }'.encode()
    headers = {"content-type": "application/json; charset=utf-8", "authorization": "Bearer t0k"}
    response = http.post("/forward", content=body, headers=headers)
    assert response.status_code == 200, response.text
    a, b = recorder.to("/a")[-1], recorder.to("/b")[-1]
    for seen, method in ((a, "POST"), (b, "PUT")):
        assert seen.method == method
        assert seen.body == body
        assert seen.headers["content-type"] == "application/json; charset=utf-8"
        assert seen.headers["authorization"] == "Bearer t0k"  # KrakenD's param_forwarding


def test_a_backend_gets_no_header_the_http_client_would_add_of_its_own(
    http: httpx.Client, recorder: Recorder
) -> None:
    """No User-Agent, no Content-Type guessed for a body (aiohttp would send
    `application/octet-stream`); aggregation calls ask for JSON, compressed or not, and a
    passthrough sends what the client sent, exactly (gateway/backends/http.GatewayRequest)."""
    plain = {"user-agent": "", "accept": "", "accept-encoding": ""}  # httpx's own, emptied
    untyped = http.post("/forward", content=b"\x00raw bytes", headers=plain)
    assert untyped.status_code == 200, untyped.text
    told = http.get("/told", headers=plain)
    assert told.status_code == 200, told.text
    for seen in (recorder.to("/a")[-1], recorder.to("/told")[-1]):
        assert "user-agent" not in seen.headers and "content-type" not in seen.headers
        assert seen.headers["accept"] == "application/json"
        assert "gzip" in seen.headers["accept-encoding"]
    assert recorder.to("/a")[-1].body == b"\x00raw bytes"

    passed = http.post(
        "/proxied/raw", content=b"as sent", headers={"user-agent": "a-client/1.0", "accept": ""}
    )
    assert passed.status_code == 200, passed.text
    seen = recorder.to("/raw")[-1]
    assert seen.body == b"as sent" and "content-type" not in seen.headers
    assert seen.headers["user-agent"] == "a-client/1.0"
    assert seen.headers.get("accept") == ""  # the client's (empty) value, not */*
    bare = http.get("/proxied/bare", headers=plain)
    assert bare.status_code == 200, bare.text
    seen = recorder.to("/bare")[-1]
    assert "content-type" not in seen.headers
    assert [seen.headers[name] for name in plain] == ["", "", ""]  # the client's, as sent


def test_forward_passes_a_chunked_body_of_any_type_unparsed(
    http: httpx.Client, recorder: Recorder
) -> None:
    rows = [b"sku,quantity\n", b"42,1\n", bytes(range(256))]
    response = http.post("/forward", content=iter(rows), headers={"content-type": "text/csv"})
    assert response.status_code == 200, response.text
    seen = recorder.to("/a")[-1]
    assert hashlib.sha256(seen.body).digest() == hashlib.sha256(b"".join(rows)).digest()
    assert seen.headers["content-type"] == "text/csv"
    assert "transfer-encoding" not in seen.headers  # read whole, sent with its length


def test_body_templates_keep_json_types_and_reach_path_query_and_headers(
    http: httpx.Client, recorder: Recorder
) -> None:
    sent = {
        "total": 12.5,
        "items": [{"sku": 42, "quantity": 2}, {"sku": 7}],
        "vip": True,
        "note": None,
        "customer": {"name": "Ada Lovelace"},
    }
    response = http.post("/typed", json=sent)
    assert response.status_code == 200, response.text
    seen = recorder.to("/typed/Ada%20Lovelace")[-1]
    assert seen.headers["content-type"] == "application/json"
    assert seen.query == "total=12.5"  # coupon was not sent: left out
    assert seen.headers["x-customer"] == "Ada Lovelace"
    first_bytes = len(recorder.to("/first")[-1].body)
    assert seen.json() == {
        "amount": 12.5,
        "lines": [{"sku": 42, "quantity": 2}, {"sku": 7}],
        "vip": True,
        "nothing": None,
        "note": f"order {first_bytes} for Ada Lovelace",
        "fixed": [1, "two", {"three": 3}],
        "braces": "{literal}",
    }
    assert isinstance(seen.json()["amount"], float) and isinstance(seen.json()["lines"], list)


def test_a_missing_body_value_fails_the_call_like_other_missing_refs(
    http: httpx.Client, recorder: Recorder
) -> None:
    before = len(recorder.to("/limited"))
    response = http.post("/limited", json={"y": 1})
    assert response.status_code == 502  # the endpoint's only call could not be built
    assert "{body.x} is not in the request" in response.text
    assert len(recorder.to("/limited")) == before


def test_body_values_reach_legacy_args_as_text(http: httpx.Client) -> None:
    response = http.post("/args", json={"sku": 42, "customer": {"name": "Ada"}})
    assert response.status_code == 200, response.text
    # args are text; a value the client did not send is left out, as a query parameter is
    assert response.json() == {"args": {"sku": "42", "who": "for Ada"}}


def test_body_values_bind_as_sql_parameters(http: httpx.Client) -> None:
    response = http.post("/sql", json={"n": 41, "customer": {"name": "Ada"}})
    assert response.status_code == 200, response.text
    assert response.json() == {"next": 42, "name": "Ada", "no_quantity": True}
    bad = http.post("/sql", json={"n": "forty-one", "customer": {"name": "Ada"}})
    assert bad.status_code == 400
    assert "parameter 'body.n' is not a valid int" in bad.json()["detail"]
    nested = http.post("/sql", json={"n": 1, "customer": {"name": {"first": "Ada"}}})
    assert nested.status_code == 400
    assert "parameter 'body.customer.name' is not a single value" in nested.json()["detail"]


# --- refused before any call -----------------------------------------------------------------


def raw_exchange(port: int, head: bytes, body_parts: list[bytes]) -> tuple[int, bytes]:
    """One request over a fresh socket, written whole; the status and the answer's bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b"".join(body_parts))
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before an answer: {received!r}"
            received += chunk
        head_bytes, _, rest = received.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head_bytes.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed in the middle of the answer"
            rest += chunk
    return int(head_bytes.split(b" ", 2)[1]), head_bytes + b"\r\n\r\n" + rest


def chunked(
    path: str, parts: list[bytes], content_type: bytes = b"application/json"
) -> tuple[bytes, list[bytes]]:
    return (
        f"POST {path} HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n".encode()
        + b"Content-Type: "
        + content_type
        + b"\r\n\r\n"
    ), [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts] + [b"0\r\n\r\n"]


@pytest.mark.parametrize("path", ["/limited", "/limited-forward", "/limited-get"])
def test_a_chunked_body_over_max_body_is_413_and_nothing_is_sent(
    gateway: Running, recorder: Recorder, path: str
) -> None:
    before = len(recorder.requests)
    # 2 KiB in 100-byte chunks against a 1 KiB limit: no length announced, counted as it comes
    parts = [b'{"x": "'] + [b"y" * 100] * 20 + [b'"}']
    head, body = chunked(path, parts)
    if path == "/limited-get":
        head = head.replace(b"POST", b"GET", 1)
    status, answer = raw_exchange(gateway.port, head, body)
    assert status == 413, answer
    assert b"application/problem+json" in answer and b"connection: close" in answer.lower()
    assert len(recorder.requests) == before


@pytest.mark.parametrize("path", ["/limited", "/limited-forward", "/limited-get"])
def test_a_chunked_body_within_max_body_is_served(
    gateway: Running, recorder: Recorder, path: str
) -> None:
    head, body = chunked(path, [b'{"x": ', b'"small"}'])
    if path == "/limited-get":
        head = head.replace(b"POST", b"GET", 1)
    status, answer = raw_exchange(gateway.port, head, body)
    assert status == 200, answer
    sent = {"/limited": b'{"x":"small"}', "/limited-forward": b'{"x": "small"}'}
    if path in sent:
        assert recorder.to(path)[-1].body == sent[path]


def test_a_declared_body_over_max_body_is_413_and_nothing_is_sent(
    http: httpx.Client, recorder: Recorder
) -> None:
    before = len(recorder.requests)
    response = http.post("/limited-forward", content=b"y" * 2048, headers=JSON)
    assert response.status_code == 413
    assert len(recorder.requests) == before


@pytest.mark.parametrize(
    ("content", "headers", "status", "detail"),
    [
        (b'{"x": 1}', {"content-type": "text/plain"}, 415, "must be JSON"),
        (b'{"x": 1}', {}, 415, "not untyped"),
        (b'{"x": 1}', {"content-type": "application/xml"}, 415, "not application/xml"),
        (b'{"x": ', JSON, 400, "not valid JSON"),
        (b"\xff\xfe", JSON, 400, "not valid JSON"),
        (b"[" * 5000 + b"]" * 5000, JSON, 400, "not valid JSON"),  # nesting past orjson's limit
        (b"", JSON, 400, "needs a JSON body"),
    ],
)
def test_a_body_the_endpoint_cannot_read_is_refused_before_any_call(
    http: httpx.Client,
    recorder: Recorder,
    content: bytes,
    headers: dict[str, str],
    status: int,
    detail: str,
) -> None:
    before = len(recorder.requests)
    response = http.post("/typed", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]
    assert len(recorder.requests) == before


def test_json_media_types_with_parameters_and_suffixes_are_json(
    http: httpx.Client, recorder: Recorder
) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = http.post(
            "/inline", content=b'{"id": 5}', headers={"content-type": content_type}
        )
        assert response.status_code == 200, response.text
        assert recorder.to("/inline")[-1].json() == {"id": 5}


def test_schema_errors_name_each_failing_json_pointer(
    http: httpx.Client, recorder: Recorder
) -> None:
    before = len(recorder.requests)
    bad = {"items": [{"sku": 1}, {"sku": "two", "quantity": 1.5}], "customer": {"name": 7}}
    response = http.post("/validated", json=bad)
    assert response.status_code == 400, response.text
    problem = response.json()
    pointers = [e["pointer"] for e in problem["errors"]]
    assert pointers == ["/customer/name", "/items/1/quantity", "/items/1/sku", "/total"]
    assert "'total' is a required property" in problem["errors"][-1]["detail"]
    assert problem["detail"].startswith("the body does not match the schema at /customer/name")
    assert len(recorder.requests) == before
    good = {"total": 3, "items": [{"sku": 1}], "customer": {"name": "Ada"}}
    assert http.post("/validated", json=good).status_code == 200
    assert recorder.to("/validated")[-1].json() == good


def test_an_inline_schema_is_checked_too(http: httpx.Client) -> None:
    response = http.post("/inline", json={"id": "7"})
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"pointer": "/id", "detail": "'7' is not of type 'integer'"}
    ]
    whole = http.post("/inline", json=[1])
    assert whole.json()["errors"][0]["pointer"] == ""  # the body itself


def test_schema_error_lists_are_bounded(http: httpx.Client) -> None:
    response = http.post("/validated", json={"total": 1, "items": ["x"] * 5000})
    assert response.status_code == 400
    assert len(response.json()["errors"]) == 20


# --- backend statuses that reach the client -------------------------------------------------


@pytest.mark.parametrize("status", [404, 409])
def test_pass_errors_answers_the_backends_4xx_and_json_body(
    http: httpx.Client, status: int
) -> None:
    response = http.post(f"/pass/{status}", json={"quantity": 3})
    assert response.status_code == status
    assert response.headers["x-gateway-complete"] == "false"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": f"status {status}", "field": "quantity"}


def test_pass_errors_passes_a_problem_json_as_it_is(http: httpx.Client) -> None:
    response = http.post("/pass/422", json={})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "https://shop.example/out-of-stock"


def test_a_backends_5xx_never_leaks_under_pass_errors(http: httpx.Client) -> None:
    for status in (500, 503):
        response = http.post(f"/pass/{status}", json={})
        assert response.status_code == 502
        assert response.headers["content-type"] == "application/problem+json"
        assert "status" not in response.json().get("error", "")


def test_a_4xx_body_that_is_not_json_or_too_big_is_replaced(http: httpx.Client) -> None:
    for status in (410, 413):
        response = http.post(f"/pass/{status}", json={})
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["x-gateway-complete"] == "false"
        assert "<h1>" not in response.text and "xxx" not in response.text


def test_without_pass_errors_a_4xx_still_fails_the_endpoint_with_502(http: httpx.Client) -> None:
    assert http.post("/no-pass/409", json={}).status_code == 502


def test_a_passed_4xx_wins_over_a_timeout_and_reaches_through_a_skip(
    http: httpx.Client, recorder: Recorder
) -> None:
    # `slow` times out (504 otherwise); `write` is skipped because `check` answered 409
    before = len(recorder.to("/write"))
    response = http.post("/pass-chain", json={})
    assert response.status_code == 409
    assert response.json() == {"error": "status 409", "field": "quantity"}
    assert len(recorder.to("/write")) == before


# --- retries, idempotency, what backends are told --------------------------------------------


def test_a_post_is_retried_only_when_marked_idempotent_with_the_same_key_and_body(
    http: httpx.Client, recorder: Recorder
) -> None:
    body = b'{"order": 1}'
    response = http.post(
        "/post-retry", content=body, headers={**JSON, "idempotency-key": "key-8f2c"}
    )
    assert response.status_code == 502  # every call failed (503s)
    assert len(recorder.to("/flaky-once")) == 1
    tries = recorder.to("/flaky-again")
    assert len(tries) == 3
    assert {t.headers["idempotency-key"] for t in tries} == {"key-8f2c"}
    assert {t.body for t in tries} == {body}


def test_calls_are_told_who_the_client_is_and_connection_named_headers_stay(
    gateway: Running, recorder: Recorder
) -> None:
    head = (
        b"GET /told HTTP/1.1\r\nHost: shop.example\r\nX-Custom: kept\r\nX-Secret: hop\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\nConnection: keep-alive, X-Secret\r\n\r\n"
    )
    status, answer = raw_exchange(gateway.port, head, [])
    assert status == 200, answer
    seen: Recorded = recorder.to("/told")[-1]
    assert seen.headers["x-custom"] == "kept"
    assert "x-secret" not in seen.headers  # listed in forward_headers, but hop-by-hop here
    assert seen.headers["x-forwarded-for"] == "127.0.0.1"  # the client's claim is not believed
    assert seen.headers["x-forwarded-proto"] == "http"
    assert seen.headers["x-forwarded-host"] == "shop.example"


def test_the_schema_file_is_read_relative_to_the_routes_file(tmp_path: Path) -> None:
    from gateway.config.loader import load_spec

    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "s.json").write_text('{"type": "object"}')
    config = tmp_path / "gw.yaml"
    config.write_text(
        "version: 1\nbackends: {rec: {kind: http, url: 'http://127.0.0.1:1'}}\n"
        "endpoints: [{path: /a, method: POST, request: {schema: schemas/s.json},"
        " calls: [{backend: rec}]}]\n"
    )
    request = load_spec(config).endpoints[0].request
    assert request is not None and request.json_schema == {"type": "object"}


# --- a hostile client costs one request ------------------------------------------------------

HOSTILE_CONFIG = """
version: 1
backends:
  rec: {{kind: http, url: "{rec}"}}
endpoints:
  - path: /json
    method: POST
    max_body: 1KiB
    calls: [{{name: a, backend: rec, method: POST, path: /hostile, body: {{x: "{{body.x}}"}}}}]
  - path: /nobody
    max_body: 1KiB
    calls: [{{name: a, backend: rec, path: /hostile}}]
"""
ATTEMPT_BYTES = 64 * 1024 * 1024


def stream_until_refused(port: int, path: bytes, method: bytes) -> int:
    """Stream a chunked body of up to ATTEMPT_BYTES; how many bytes went out before the
    gateway closed the connection."""
    chunk = b"10000\r\n" + b"y" * 0x10000 + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            method + b" " + path + b" HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\n"
        )
        try:
            while sent < ATTEMPT_BYTES:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # reset or broken pipe: the gateway stopped reading
            pass
    return sent


def test_a_hostile_body_costs_one_request_and_bounded_memory(
    recorder: Recorder, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(HOSTILE_CONFIG.format(rec=recorder.url))
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        gateway = start_gateway(config, stderr=log)
        try:
            process = psutil.Process(gateway.process.pid)
            with httpx.Client(base_url=gateway.url, timeout=30) as client:
                assert client.post("/json", json={"x": 1}).status_code == 200
                rss_before = process.memory_info().rss
                for path, method in ((b"/json", b"POST"), (b"/nobody", b"GET")):
                    sent = stream_until_refused(gateway.port, path, method)
                    # refused at 1 KiB and closed: what went out is what socket buffers held
                    assert sent < ATTEMPT_BYTES // 2, f"{path!r}: {sent} bytes accepted"
                # a client that leaves in the middle of its body
                with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
                    sock.sendall(
                        b"POST /json HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
                        b'Content-Type: application/json\r\n\r\n5\r\n{"x":\r\n'
                    )
                assert client.post("/json", json={"x": 2}).status_code == 200
                assert process.memory_info().rss - rss_before < 20 * 1024 * 1024
            assert [r.json() for r in recorder.to("/hostile")][-1:] == [{"x": 2}]
        finally:
            assert gateway.stop() == 0
    text = log_path.read_text()
    assert "Traceback" not in text and "internal error" not in text, text
