"""Requests the HTTP server refuses itself, before the app runs: their answers and their count.

The app's own errors are problem+json with an `X-Request-ID` (gateway/web/edge.py); these are
written by the protocol, so they are built here in the same shape: a fresh request id, a
problem+json body, and `Connection: close` (after a framing error or a timeout the rest of
the connection's bytes cannot be trusted to start a request).
"""

from __future__ import annotations

from collections import Counter
from http import HTTPStatus

import orjson

from gateway.web.request_id import choose_request_id

REASONS = {
    "request_line": "a request line longer than GATEWAY_MAX_HEADER_LINE_BYTES (414)",
    "header_line": "a header line longer than GATEWAY_MAX_HEADER_LINE_BYTES (431)",
    "header_bytes": "a head larger than GATEWAY_MAX_HEADER_BYTES (431)",
    "header_count": "more header lines than GATEWAY_MAX_HEADERS (431)",
    "header_timeout": "a head not complete within GATEWAY_HEADER_TIMEOUT_SECONDS (408)",
    "idle_timeout": "a connection that sent nothing within it (closed, no answer)",
    "body_timeout": "a body not complete within GATEWAY_BODY_TIMEOUT_SECONDS (408)",
    "bad_host": "no Host header, or more than one (400, RFC 9112 3.2)",
    "bad_request": "a request httptools cannot parse (400)",
}
"""Every reason a refusal is counted under (`ProtocolRefusal.reason`), and what it means."""

REFUSALS: Counter[str] = Counter()
"""Refusals of this process by reason, exported as `gateway_protocol_refusals_total`."""


def refusal(status: int, detail: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The whole answer, as bytes to write: status line, headers, problem+json body."""
    phrase = HTTPStatus(status).phrase
    body = orjson.dumps(
        {"type": "about:blank", "title": phrase, "status": status, "detail": detail}
    )
    head = [f"HTTP/1.1 {status} {phrase}\r\n".encode()]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head += [
        b"content-type: application/problem+json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n",
        b"x-request-id: " + choose_request_id(None).encode() + b"\r\n",
        b"\r\n",
    ]
    return b"".join(head) + body
