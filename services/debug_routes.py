"""Pieces shared by the demo services: JSON response class, JSON error handlers, debug routes.

The debug routes exist for the gateway's end-to-end tests: they let a test see exactly what the
gateway forwarded upstream (path, headers, body) and exercise streaming in both directions.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

BLOB_CHUNK_SIZE = 64 * 1024
# Refuse absurd sizes so a typo in a test cannot make a service stream for minutes.
BLOB_MAX_SIZE = 1 << 30
# The blob pattern period is prime (251) rather than 256 so it never lines up with the 64 KiB
# chunk size: a dropped, duplicated or reordered chunk then changes the bytes, not just the length.
_BLOB_PERIOD = 251
_BLOB_PATTERN = bytes(range(_BLOB_PERIOD)) * (BLOB_CHUNK_SIZE // _BLOB_PERIOD + 2)


class ORJSONResponse(Response):
    """JSON response serialised with orjson (faster, and strict about non-JSON values)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(
    status_code: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """Build the `{"error": ...}` body every service uses for non-2xx answers."""
    return ORJSONResponse({"error": message}, status_code=status_code, headers=headers)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Render routing errors (404 for unknown paths, 405, ...) as JSON instead of plain text.

    The gateway merges JSON bodies, so a plain-text "Not Found" from a backend would be a
    different failure mode from an application 404; keeping every error JSON avoids that.
    """
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail, headers=exc.headers)


EXCEPTION_HANDLERS = {HTTPException: http_exception_handler}


def blob_chunks(size: int) -> Iterator[bytes]:
    """Yield the deterministic content of `GET /blob?size=N` in chunks of at most 64 KiB.

    Public so tests can compute the expected bytes without a running service.
    """
    offset = 0
    while offset < size:
        length = min(BLOB_CHUNK_SIZE, size - offset)
        start = offset % _BLOB_PERIOD
        yield _BLOB_PATTERN[start : start + length]
        offset += length


async def livez(request: Request) -> Response:
    """Liveness probe: the process is up and serving."""
    return ORJSONResponse({"status": "ok"})


async def received_headers(request: Request) -> Response:
    """Echo the request headers (lowercased names) so tests can check what the gateway forwarded."""
    received: dict[str, str] = {}
    for name, value in request.headers.items():
        # Repeated headers are folded the way HTTP allows (comma-joined) instead of the last one
        # silently winning, so a test can spot a header the gateway duplicated.
        received[name] = f"{received[name]}, {value}" if name in received else value
    return ORJSONResponse(received)


async def echo_path(request: Request) -> Response:
    """Report the exact path that reached this service, before and after percent-decoding."""
    raw_path = request.scope.get("raw_path")
    return ORJSONResponse(
        {
            # raw_path is optional in the ASGI spec; null tells a test the server did not send it.
            "raw_path": raw_path.decode("latin-1") if isinstance(raw_path, bytes) else None,
            "path": request.scope["path"],
            "query": request.scope["query_string"].decode("latin-1"),
        }
    )


async def upload(request: Request) -> Response:
    """Consume the request body as a stream and report its length and SHA-256.

    Hashing chunk by chunk (never buffering the whole body) keeps memory flat, so a test can
    push a large body through the gateway and prove it was streamed end to end intact.
    """
    digest = hashlib.sha256()
    received = 0
    async for chunk in request.stream():
        digest.update(chunk)
        received += len(chunk)
    return ORJSONResponse({"bytes": received, "sha256": digest.hexdigest()})


async def blob(request: Request) -> Response:
    """Stream `size` deterministic bytes (chunked transfer encoding, no Content-Length)."""
    raw_size = request.query_params.get("size", "")
    if not (raw_size.isascii() and raw_size.isdigit()) or int(raw_size) > BLOB_MAX_SIZE:
        return error_response(400, f"size must be an integer between 0 and {BLOB_MAX_SIZE}")
    size = int(raw_size)

    async def body() -> AsyncIterator[bytes]:
        # An async generator (not a sync iterator) so Starlette does not hop to a thread per chunk.
        for chunk in blob_chunks(size):
            yield chunk

    return StreamingResponse(body(), media_type="application/octet-stream")


# Routes every service exposes.
COMMON_ROUTES = [
    Route("/livez", livez, methods=["GET"]),
    Route("/headers", received_headers, methods=["GET"]),
]

# Routes for path-traversal and streaming passthrough tests; mounted by one service is enough.
PASSTHROUGH_ROUTES = [
    Route("/echo-path/{rest:path}", echo_path, methods=["GET"]),
    Route("/upload", upload, methods=["POST", "PUT"]),
    Route("/blob", blob, methods=["GET"]),
]
