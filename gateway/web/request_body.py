"""The body step of an aggregation endpoint: the client's body read once, before any call.

What it does depends on what the endpoint's calls use of the body (`BodyUse`):

* **json** (a `request:` block, or a template reading `{body...}`): no body, or an empty one,
  is 400; a Content-Type that is not JSON (`application/json`, `application/*+json`) is 415;
  the body is read whole within `max_body` (413 past it, chunked bodies too), parsed once
  (orjson; 400 naming the error when it does not parse), checked against the endpoint's JSON
  Schema (400 with `errors`: one `{"pointer", "detail"}` per failing place, at most
  `MAX_SCHEMA_ERRORS`), and becomes the `body` source of the context;
* **raw** (a `body: forward` call, no JSON read): the bytes are read whole within `max_body`
  and travel in the context with their Content-Type, unparsed;
* **drain** (the endpoint uses no body): a chunked body is read and dropped within
  `max_body` (413 past it), so no endpoint takes an unbounded body; a body of declared length
  was already checked against the limit by `body_limit`, and is left to the server.

Every refusal happens before any call runs, so nothing reaches a backend. The body is read
whole rather than streamed to the calls: several calls (and retries) send the same bytes, and
a body over the limit is refused before any of it was sent anywhere. 413 and 415 close the
connection (`Connection: close`): the rest of a body the gateway will not read is not worth
receiving.
"""

from __future__ import annotations

from enum import Enum
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway.config.requests import RequestSpec, compile_schema, load_schema
from gateway.engine.bodies import is_json
from gateway.engine.context import RawBody, RequestContext
from gateway.engine.plan import EndpointPlan
from gateway.errors import (
    BadJson,
    BadRequest,
    BodyTooLarge,
    SchemaViolation,
    UnsupportedMediaType,
)
from gateway.web.body import limited_stream
from gateway.web.problems import problem
from gateway.web.steps import Step

MAX_SCHEMA_ERRORS = 20
"""Failing places listed in a 400; a hostile body failing everywhere gets a bounded answer."""
MAX_DETAIL_CHARS = 200
"""A schema message quotes the failing value: cut, so a huge value is not echoed back."""
_CLOSE = {"Connection": "close"}


class BodyUse(Enum):
    """What an endpoint's calls use of the client's body."""

    JSON = "json"
    RAW = "raw"
    DRAIN = "drain"


def body_step(plan: EndpointPlan, request: RequestSpec | None, limit: int) -> Step:
    """The body step of an aggregation endpoint, from what its calls use of the body."""
    if plan.reads_json:
        schema = request.json_schema if request is not None else None
        if isinstance(schema, str):  # a spec built in code, not loaded from a routes file
            schema = load_schema(schema, Path.cwd())
        validator = compile_schema(schema) if schema is not None else None
        return request_body(limit, BodyUse.JSON, validator)
    return request_body(limit, BodyUse.RAW if plan.forwards else BodyUse.DRAIN)


def request_body(limit: int, use: BodyUse, validator: Validator | None = None) -> Step:
    """The route step reading the body as `use` says, within `limit` bytes."""

    async def step(request: Request, context: RequestContext) -> RequestContext | Response:
        try:
            if use is BodyUse.JSON:
                return await _read_json(request, context, limit, validator)
            if use is BodyUse.RAW:
                if not _has_body(context):
                    return context
                data = await read_whole(request, limit)
                return context.with_raw_body(RawBody(data, context.headers.get("content-type")))
            if "transfer-encoding" in context.headers:
                async for _ in limited_stream(request, limit):
                    pass
            return context
        except SchemaViolation as exc:
            return problem(exc.status, str(exc), errors=exc.errors)
        except (BodyTooLarge, UnsupportedMediaType) as exc:
            return problem(exc.status, str(exc), headers=_CLOSE)
        except BadRequest as exc:
            return problem(exc.status, str(exc))
        except ClientDisconnect:
            # nobody reads this answer; returning one ends the request without a 500
            return problem(400, "the client went away before sending its whole body")

    return step


def _has_body(context: RequestContext) -> bool:
    """Whether the request carries a body (HTTP/1.1 framing), from the context's headers
    (cheaper than building Starlette's header view on every request)."""
    headers = context.headers
    length = headers.get("content-length")
    return (length is not None and length != "0") or "transfer-encoding" in headers


async def read_whole(request: Request, limit: int) -> bytes:
    """The whole body; BodyTooLarge past `limit` bytes (counted as it arrives)."""
    chunks = [chunk async for chunk in limited_stream(request, limit)]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _read_json(
    request: Request, context: RequestContext, limit: int, validator: Validator | None
) -> RequestContext:
    content_type = context.headers.get("content-type")
    if not _has_body(context):
        raise BadJson("this endpoint needs a JSON body")
    if not is_json(content_type):
        raise UnsupportedMediaType(
            f"the body must be JSON (application/json), not {content_type or 'untyped'}"
        )
    data = await read_whole(request, limit)
    if not data:
        raise BadJson("this endpoint needs a JSON body")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadJson(f"the body is not valid JSON: {exc}") from None
    if validator is not None:
        check_body(validator, value)
    return context.with_source("body", value).with_raw_body(RawBody(data, content_type))


def check_body(validator: Validator, value: Any) -> None:
    """SchemaViolation naming the first `MAX_SCHEMA_ERRORS` failing places of `value`."""
    found = list(islice(validator.iter_errors(value), MAX_SCHEMA_ERRORS))
    if not found:
        return
    errors = sorted(({"pointer": _pointer(e), "detail": _detail(e)} for e in found), key=_key)
    places = ", ".join(dict.fromkeys(e["pointer"] or "(the body)" for e in errors))
    raise SchemaViolation(f"the body does not match the schema at {places}", errors)


def _pointer(error: ValidationError) -> str:
    """The JSON Pointer (RFC 6901) of the failing value; for a missing required member, of
    that member (where a form shows the message)."""
    path = [str(step) for step in error.absolute_path]
    required = error.validator_value
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [
            name
            for name in (required if isinstance(required, list) else [])
            if isinstance(name, str) and name not in error.instance and repr(name) in error.message
        ]
        if missing:
            path.append(missing[0])
    return "".join("/" + step.replace("~", "~0").replace("/", "~1") for step in path)


def _detail(error: ValidationError) -> str:
    message = error.message
    return message if len(message) <= MAX_DETAIL_CHARS else message[:MAX_DETAIL_CHARS] + "..."


def _key(error: dict[str, str]) -> tuple[str, str]:
    return error["pointer"], error["detail"]
