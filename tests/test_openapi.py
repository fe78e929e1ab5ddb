"""The OpenAPI 3.1 document: valid (openapi-spec-validator), complete for the demo, served."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from openapi_spec_validator import validate

from gateway.config.loader import load_spec
from gateway.config.settings import expansion_environment
from gateway.web.openapi import ERRORS, openapi_document
from tests.conftest import GatewayFactory

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.yaml"


# the demo's routes read ${JWT_SECRET} (gateway demo sets it): the document needs one too
DEMO_ENV = {**os.environ, "JWT_SECRET": "k" * 32}


def demo_document() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "openapi", str(DEMO)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=DEMO_ENV,
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def parameters(operation: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in operation["parameters"] if p["in"] == where}


def test_the_demo_document_is_valid_openapi_3_1() -> None:
    document = demo_document()
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on any error


def test_every_demo_endpoint_appears_with_its_parameters() -> None:
    document = demo_document()
    spec = load_spec(DEMO, environ={**expansion_environment(), "JWT_SECRET": "k" * 32})
    expected = {e.path.replace("{rest:path}", "{rest}"): e for e in spec.endpoints}
    assert set(document["paths"]) == set(expected)

    product = document["paths"]["/api/products/{id}"]["get"]
    assert parameters(product, "path") == {
        "id": {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    }
    assert set(parameters(product, "query")) == {"delay", "fail"}
    assert set(parameters(product, "header")) == {"accept-language", "X-Request-ID"}
    assert product["summary"] == "One product page"
    ok = product["responses"]["200"]
    assert "X-Gateway-Complete" in ok["headers"]
    assert ok["content"]["application/json"]["example"]["id"] == 42
    statuses = {int(s) for s in product["responses"]}
    assert statuses == {200, *ERRORS} >= {400, 401, 403, 404, 413, 415, 429, 502, 503, 504}
    orders = document["paths"]["/api/orders"]["post"]  # the request schema, from `request:`
    body = orders["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["user_id", "sku", "quantity"]
    problem = document["components"]["responses"]["502"]["content"]["application/problem+json"]
    assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}

    # a typed SQL parameter types the path parameter
    user = document["paths"]["/api/users/{id}"]["get"]
    assert parameters(user, "path")["id"]["schema"] == {"type": "integer"}
    stream = document["paths"]["/api/users-export"]["get"]
    assert "application/x-ndjson" in stream["responses"]["200"]["content"]
    assert "limit" in parameters(stream, "query")
    proxy = document["paths"]["/api/catalog/{rest}"]
    assert {"get", "post", "put", "delete"} <= set(proxy)
    assert parameters(proxy["get"], "path")["rest"]["required"] is True
    for path, item in document["paths"].items():
        names = {p["name"] for op in item.values() for p in op["parameters"] if p["in"] == "path"}
        assert names == set(_placeholders(path)), path


def _placeholders(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def test_a_bare_config_still_validates(tmp_path: Path) -> None:
    config = tmp_path / "g.yaml"
    config.write_text(
        "version: 1\nbackends: {a: {kind: http, url: 'http://127.0.0.1:1'}}\n"
        "endpoints: [{path: '/x/{n:int}', calls: [{backend: a, path: '/y/{n}'}]}]\n"
    )
    document = openapi_document(load_spec(config))
    validate(document)
    operation = document["paths"]["/x/{n}"]["get"]
    assert parameters(operation, "path")["n"]["schema"] == {"type": "integer"}


def test_the_gateway_serves_the_document_and_the_docs_page_offline(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gateway = gateway_factory(
        "version: 1\nbackends: {a: {kind: http, url: 'http://127.0.0.1:1'}}\n"
        "endpoints: [{path: '/x/{n}', calls: [{backend: a, path: '/y/{n}'}]}]\n"
    )
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        document = client.get("/openapi.json")
        assert document.status_code == 200
        assert "/x/{n}" in document.json()["paths"]
        page = client.get("/docs")
        assert page.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in page.text
        assert "http" not in page.text.replace("http-equiv", "")  # no CDN: every asset is ours
        bundle = client.get("/docs/static/swagger-ui-bundle.js")
        assert bundle.status_code == 200 and len(bundle.content) > 100_000
        assert client.get("/docs/static/swagger-ui.css").status_code == 200


def test_gateway_check_names_a_mistake_in_a_docs_block(tmp_path: Path) -> None:
    config = tmp_path / "g.yaml"
    config.write_text(
        "version: 1\nbackends: {a: {kind: http, url: 'http://127.0.0.1:1'}}\n"
        "endpoints: [{path: '/x', calls: [{backend: a}], docs: {summry: hi}}]\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{config}: endpoints[0].docs.summry: unknown field (did you mean 'summary'?)"
    ]
