"""Request body limits: a declared Content-Length over the limit is refused before any work,
and a streamed body is counted as it arrives."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request


class BodyTooLarge(Exception):
    """A streamed request body went past the limit."""


def declared_length_exceeds(request: Request, limit: int) -> bool:
    """True when the client announced a body larger than `limit`."""
    declared = request.headers.get("content-length")
    return declared is not None and declared.isdigit() and int(declared) > limit


def has_body(request: Request) -> bool:
    """Whether the request carries a body at all (HTTP/1.1 framing headers)."""
    length = request.headers.get("content-length")
    return (length is not None and length != "0") or "transfer-encoding" in request.headers


async def limited_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body as it arrives; raises BodyTooLarge past `limit` bytes."""
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise BodyTooLarge(f"request body is larger than {limit} bytes")
        if chunk:
            yield chunk
