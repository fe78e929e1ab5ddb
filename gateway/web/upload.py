"""The body a passthrough sends upstream: whole when it is small, streamed and counted when not.

The server protocol reads a body of up to `GATEWAY_BUFFER_BODY_BYTES` before the app runs
(gateway/server/protocol.py), so such a body is here, whole, in the first ASGI message: it is
checked against the endpoint's limit and sent with its length, before any upstream slot or
connection is taken. A larger body is streamed as it arrives and counted: the chunk that
would pass the limit is never sent, the upstream request is broken off and the client gets
413, so no byte past the limit reaches the upstream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from starlette.requests import ClientDisconnect
from starlette.types import Receive

from gateway.errors import BodyTooLarge
from gateway.web.body import declares_body

UpstreamBody = bytes | AsyncIterator[bytes] | None


async def upstream_body(receive: Receive, headers: Mapping[str, str], limit: int) -> UpstreamBody:
    """The request body to send: bytes when it arrived whole, else a counted stream; None
    without one (by the request's `headers`, lower-case names). BodyTooLarge past `limit`;
    ClientDisconnect if the client went away."""
    if not declares_body(headers):
        return None
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnect()
    first: bytes = message.get("body", b"")
    if len(first) > limit:
        raise BodyTooLarge(f"request body is larger than {limit} bytes")
    if not message.get("more_body", False):
        return first
    return _counted(receive, first, limit)


async def _counted(receive: Receive, first: bytes, limit: int) -> AsyncIterator[bytes]:
    received = len(first)
    if first:
        yield first
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            raise BodyTooLarge(f"request body is larger than {limit} bytes")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
