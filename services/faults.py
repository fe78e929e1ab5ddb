"""Per-request fault injection, so gateway tests can make a demo backend slow or failing.

Controls, each readable from a query parameter or a request header (the query parameter wins
when both are present):

* ``delay`` / ``X-Delay``: sleep before handling. ``"250ms"``, ``"2s"`` or bare seconds ``"0.5"``.
* ``fail`` / ``X-Fail``: probability in [0, 1] of answering 503 ``{"error": "injected failure"}``.
* ``status`` / ``X-Status``: always answer this status (400-599) with a JSON error body.

The delay applies before an injected error too, so tests can combine slow and failing. A forced
status takes precedence over ``fail``. Malformed values answer 400 rather than being ignored, so a
typo cannot make a test pass against a backend that was never actually faulty.
"""

from __future__ import annotations

import asyncio
import math
import random

from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from services.debug_routes import error_response

# Cap injected latency so a typo ("2000s") cannot wedge a test run.
MAX_DELAY_SECONDS = 60.0
# Injected responses carry this header so tests can tell them apart from real upstream errors.
FAULT_HEADER = "X-Fault-Injected"


class FaultParameterError(ValueError):
    """A fault-control value could not be parsed."""


def parse_duration(value: str) -> float:
    """Parse ``"250ms"``, ``"2s"`` or bare seconds ``"0.5"`` into seconds."""
    text = value.strip().lower()
    scale = 1.0
    if text.endswith("ms"):
        text, scale = text[:-2], 0.001
    elif text.endswith("s"):
        text = text[:-1]
    try:
        seconds = float(text) * scale
    except ValueError:
        raise FaultParameterError(f"invalid delay {value!r}") from None
    # float() accepts "nan" and "inf"; neither is a usable sleep.
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_DELAY_SECONDS:
        raise FaultParameterError(f"delay must be between 0 and {MAX_DELAY_SECONDS:g}s")
    return seconds


def parse_probability(value: str) -> float:
    """Parse a failure probability in [0, 1]."""
    try:
        probability = float(value)
    except ValueError:
        raise FaultParameterError(f"invalid fail {value!r}") from None
    if not 0 <= probability <= 1:  # also rejects nan, which compares false
        raise FaultParameterError("fail must be between 0 and 1")
    return probability


def parse_status(value: str) -> int:
    """Parse a forced status; only error statuses, since the body is always an error body."""
    try:
        status = int(value)
    except ValueError:
        raise FaultParameterError(f"invalid status {value!r}") from None
    if not 400 <= status <= 599:
        raise FaultParameterError("status must be between 400 and 599")
    return status


class FaultInjection:
    """Pure ASGI middleware (not BaseHTTPMiddleware, which would buffer streaming bodies)."""

    def __init__(self, app: ASGIApp, seed: int | None = 0) -> None:
        self.app = app
        # One seeded RNG per middleware instance: a fixed seed makes `fail=` sequences repeatable
        # across runs, and separate instances do not disturb each other's sequences.
        self.rng = random.Random(seed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        query = QueryParams(scope["query_string"])
        headers = Headers(scope=scope)

        def control(name: str) -> str | None:
            return query.get(name, headers.get(f"x-{name}"))

        try:
            raw = control("delay")
            delay = parse_duration(raw) if raw is not None else 0.0
            raw = control("fail")
            fail = parse_probability(raw) if raw is not None else 0.0
            raw = control("status")
            status = parse_status(raw) if raw is not None else None
        except FaultParameterError as exc:
            await error_response(400, str(exc))(scope, receive, send)
            return

        if delay:
            await asyncio.sleep(delay)
        if status is not None:
            response = error_response(status, "injected status", {FAULT_HEADER: "status"})
            await response(scope, receive, send)
            return
        # random() is in [0, 1), so fail=1 always fails and fail=0 never does.
        if fail and self.rng.random() < fail:
            response = error_response(503, "injected failure", {FAULT_HEADER: "fail"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
