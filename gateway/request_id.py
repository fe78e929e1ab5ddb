"""X-Request-ID: kept from the client when well-formed, generated otherwise, returned, and
visible to every layer through a context variable (logs, backend calls, worker threads)."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
_WELL_FORMED = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

current_request_id: ContextVar[str] = ContextVar("current_request_id", default="-")


def choose_request_id(received: str | None) -> str:
    """The client's id when it is safe to echo and log, else a fresh one."""
    if received is not None and _WELL_FORMED.match(received):
        return received
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware, which would break contextvars and streaming)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        request_id = choose_request_id(received.decode("latin-1") if received is not None else None)
        token = current_request_id.set(request_id)
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                message["headers"] = [*headers, (b"x-request-id", raw_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)
