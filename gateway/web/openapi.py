"""The OpenAPI 3.1 document of a routes file, for the frontend teams.

Every endpoint with its path parameters (typed where the route or a `{name:type}` template
types them), the query parameters and headers the gateway reads or forwards, the statuses it
can answer (200 with `X-Gateway-Complete`; the errors as problem+json with one shared
`Problem` schema) and its optional `docs:` block. Pure: built from the validated spec, the
same for `gateway openapi FILE` and `/openapi.json`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from gateway import __version__
from gateway.config.document import GatewaySpec
from gateway.config.models import CallSpec, EndpointSpec
from gateway.config.values import HTTP_METHODS
from gateway.engine.templates import Ref, parse_template

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+))?\}")
_TYPES: dict[str, dict[str, str]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "str": {"type": "string"},
    "path": {"type": "string"},
    "uuid": {"type": "string", "format": "uuid"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"},
}
ERRORS: dict[int, str] = {
    400: "The request cannot be served as sent (a bad parameter).",
    401: "No valid credential.",
    403: "The credential does not allow this.",
    404: "No such route, or no such row.",
    413: "The request body is over the endpoint's limit.",
    415: "The request body's media type is not accepted.",
    429: "Too many requests from this client; see Retry-After.",
    502: "A decisive backend call failed.",
    503: "The gateway or a backend is at capacity, or a circuit is open; see Retry-After.",
    504: "A decisive backend call timed out.",
}
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; every error answer carries X-Request-ID.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "failed_calls": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "status": {"type": ["integer", "null"]},
                    "error": {"type": "string"},
                },
            },
        },
    },
    "required": ["status"],
}
REQUEST_ID = {
    "description": "The request's id (the client's when well-formed, else generated).",
    "schema": {"type": "string"},
}


def openapi_document(spec: GatewaySpec) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `spec`."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in spec.endpoints:
        item = paths.setdefault(_openapi_path(endpoint.path), {})
        for method in _methods(endpoint):
            item[method.lower()] = _operation(endpoint, method)
    return {
        "openapi": "3.1.0",
        "info": {"title": "fanout gateway", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {"Problem": PROBLEM_SCHEMA},
            "responses": {
                str(status): {
                    "description": text,
                    "headers": {"X-Request-ID": REQUEST_ID},
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                }
                for status, text in ERRORS.items()
            },
        },
    }


def request_body(endpoint: EndpointSpec) -> dict[str, Any] | None:
    """The operation's `requestBody`: a JSON body, with the endpoint's `request.schema` when
    it has one (loaded when the file was, so a file path is its content here); None for an
    endpoint that reads no body."""
    request = endpoint.request
    if request is None:
        return None
    schema = request.json_schema if isinstance(request.json_schema, dict) else {}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _openapi_path(path: str) -> str:
    """Starlette's `{id:int}` / `{rest:path}` as OpenAPI's `{id}` / `{rest}`."""
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def _methods(endpoint: EndpointSpec) -> list[str]:
    if endpoint.proxy is not None and "method" not in endpoint.model_fields_set:
        return [m for m in HTTP_METHODS if m.lower() != "connect"]
    return [endpoint.method]


def _refs(call: CallSpec) -> Iterator[Ref]:
    texts = [call.path, *call.query.values(), *call.headers.values(), *call.args.values()]
    texts += call.params
    for text in texts:
        yield from parse_template(text).refs


def _operation(endpoint: EndpointSpec, method: str) -> dict[str, Any]:
    refs = [ref for call in endpoint.calls for ref in _refs(call)]
    if endpoint.proxy is not None:
        refs += parse_template(endpoint.proxy.path).refs
    typed = {r.key: r.type_name for r in refs if r.source == "path" and r.type_name}
    parameters: list[dict[str, Any]] = []
    for match in _PARAM.finditer(endpoint.path):
        name, convertor = match.group(1), match.group(2)
        schema = _TYPES.get(convertor or typed.get(name) or "str", {"type": "string"})
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    query = dict.fromkeys([*endpoint.forward_query, *(r.key for r in refs if r.source == "query")])
    for name in query:
        parameters.append({"name": name, "in": "query", "schema": {"type": "string"}})
    headers = dict.fromkeys(
        h.lower()
        for h in [*endpoint.forward_headers, *(r.key for r in refs if r.source == "header")]
    )
    for name in headers:
        if name != "x-request-id":
            parameters.append({"name": name, "in": "header", "schema": {"type": "string"}})
    parameters.append({"name": "X-Request-ID", "in": "header", **REQUEST_ID})
    operation: dict[str, Any] = {
        "operationId": _operation_id(method, endpoint.path),
        "parameters": parameters,
        "responses": {
            "200": _success(endpoint),
            **{str(s): {"$ref": f"#/components/responses/{s}"} for s in ERRORS},
        },
    }
    docs = endpoint.docs
    if docs is not None and docs.summary:
        operation["summary"] = docs.summary
    if docs is not None and docs.description:
        operation["description"] = docs.description
    body = request_body(endpoint)
    if body is not None:
        operation["requestBody"] = body
    return operation


def _success(endpoint: EndpointSpec) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-ID": REQUEST_ID}
    if endpoint.proxy is not None:
        return {"description": "The backend's answer, passed through.", "headers": headers}
    if len(endpoint.calls) == 1 and endpoint.calls[0].result == "stream":
        content: dict[str, Any] = {"application/x-ndjson": {"schema": {"type": "string"}}}
    else:
        headers["X-Gateway-Complete"] = {
            "description": "false when an optional call failed and was left out.",
            "schema": {"type": "string", "enum": ["true", "false"]},
        }
        media: dict[str, Any] = {"schema": {}}
        if endpoint.docs is not None and endpoint.docs.response_example is not None:
            media["example"] = endpoint.docs.response_example
        content = {"application/json": media}
    return {"description": "The merged answer.", "headers": headers, "content": content}


def _operation_id(method: str, path: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", _openapi_path(path))
    return "_".join([method.lower(), *words]) or method.lower()
