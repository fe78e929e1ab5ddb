"""Request body limits: a declared Content-Length over the limit is refused before any work
(a route step), and a streamed body is counted as it arrives."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from starlette.requests import Request
from starlette.responses import Response

from gateway.engine.context import RequestContext
from gateway.errors import BodyTooLarge
from gateway.web.problems import problem
from gateway.web.steps import Step


def body_limit(limit: int) -> Step:
    """A route step: 413 when the client announces a body larger than `limit` bytes."""

    async def step(request: Request, context: RequestContext) -> RequestContext | Response:
        declared = context.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return problem(413, f"request body is larger than {limit} bytes")
        return context

    return step


def declares_body(headers: Mapping[str, str]) -> bool:
    """Whether a request with these headers (lower-case names: a context's `headers`)
    carries a body at all (HTTP/1.1 framing headers)."""
    length = headers.get("content-length")
    return (length is not None and length != "0") or "transfer-encoding" in headers


async def limited_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body as it arrives; raises BodyTooLarge past `limit` bytes."""
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise BodyTooLarge(f"request body is larger than {limit} bytes")
        if chunk:
            yield chunk
