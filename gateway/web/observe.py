"""The request's server span and its access log line, begun and finished by the edge.

Only given to the edge when tracing or the access log is on (`create_app`), so with both
off a request does exactly what it always did. Not an ASGI layer of its own: the edge
already sees the status, the duration and every message sent, and a second pure-ASGI
wrapper cost a coroutine frame and a `send` wrapper per message on every request (the
access log measured 1.074x CPU per request as a layer, 2026-12-02). The edge begins the
observation once the request id is chosen (the span and the line carry it) and the request
is admitted (a 503 at capacity is counted by `gateway_shed_requests`, not logged line by
line), and finishes it after the answer, the edge's own 500 included.

The span continues the caller's `traceparent`/`tracestate`, is current while the route runs
(so every call's span is its child and every log line names its trace), and is named after
the route template once routing has happened (`GET /api/products/{id}`). A handler that
knows which calls failed says so through `note_failed_calls`; the access line lists them.
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token

from opentelemetry import trace
from opentelemetry.trace import StatusCode
from starlette.types import Scope

from gateway.observability.access_log import AccessLog
from gateway.observability.spans import SpanRecorder, end_use, use_span
from gateway.observability.tracing import incoming_context

_failed_calls: ContextVar[list[str] | None] = ContextVar("gateway_failed_calls", default=None)
"""The calls that failed in the current request, when something listens (the access log)."""


def note_failed_calls(names: tuple[str, ...]) -> None:
    """Record the calls that failed in this request (for its access log line)."""
    failed = _failed_calls.get()
    if failed is not None:
        failed.extend(names)


class Observation:
    """One request being observed: its span (current) and the calls that failed."""

    __slots__ = ("failed", "failed_token", "span", "span_token")

    def __init__(
        self,
        span: trace.Span | None,
        span_token: Token[trace.Span] | None,
        failed: list[str] | None,
        failed_token: Token[list[str] | None] | None,
    ) -> None:
        self.span = span
        self.span_token = span_token
        self.failed = failed
        self.failed_token = failed_token

    def raised(self, exc: BaseException) -> None:
        """The route raised `exc` (the edge answers 500)."""
        if self.span is not None:
            self.span.record_exception(exc)


class Observer:
    """The server span (when `recorder`) and the access line (when `access_log`)."""

    def __init__(self, *, recorder: SpanRecorder | None, access_log: AccessLog | None) -> None:
        self.recorder = recorder
        self.access_log = access_log

    def __repr__(self) -> str:
        return f"<Observer tracing={self.recorder is not None} access_log={self.access_log!r}>"

    def begin(self, scope: Scope, request_id: str) -> Observation:
        """Start observing an admitted request (in its task: context variables are set)."""
        span = span_token = None
        if self.recorder is not None:
            span = self.recorder.start_request(
                scope["method"],
                incoming_context(scope["headers"]),
                {
                    "http.request.method": scope["method"],
                    "url.path": scope["path"],
                    "gateway.request_id": request_id,
                },
            )
            span_token = use_span(span)
        failed: list[str] | None = None
        failed_token = None
        if self.access_log is not None:  # only the access line lists the failed calls
            failed = []
            failed_token = _failed_calls.set(failed)
        return Observation(span, span_token, failed, failed_token)

    def finish(
        self,
        observation: Observation,
        scope: Scope,
        request_id: str,
        status: int,
        sent: int,
        elapsed: float,
    ) -> None:
        """End the span and write the access line (`status` 500 when nothing was sent)."""
        route = getattr(scope.get("route"), "path", None)
        span = observation.span
        if span is not None and observation.span_token is not None:
            _finish(span, scope["method"], route, status)
            end_use(observation.span_token)
        if self.access_log is not None and observation.failed_token is not None:
            failed = observation.failed or []
            client = scope.get("client")
            line: dict[str, object] = {
                "ts": time.time(),
                "method": scope["method"],
                "route": route,
                "path": scope["path"],
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
                "bytes": sent,
                "client_ip": client[0] if client else None,
                "request_id": request_id,
                # as X-Gateway-Complete says: every call answered (and no error status)
                "complete": status < 400 and not failed,
                "failed_calls": failed,
            }
            if span is not None:
                line["trace_id"] = f"{span.get_span_context().trace_id:032x}"
            self.access_log.write(line)
            _failed_calls.reset(observation.failed_token)


def _finish(span: trace.Span, method: str, route: str | None, status: int) -> None:
    if route is not None:
        span.update_name(f"{method} {route}")
        span.set_attributes({"http.route": route, "http.response.status_code": status})
    else:
        span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(StatusCode.ERROR)
    span.end()
