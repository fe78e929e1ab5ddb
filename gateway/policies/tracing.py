"""Tracing policy: one client span per try of a call, so retries and hedged copies show as
spans of their own; refusals (an open circuit, a full bulkhead) as events.

Two pieces, placed by `Resilience.wrap` only when tracing is on (off, the chain is exactly
what it was):

* `call_scope`, outermost, for a call with a retry or a hedge (any other makes one try): a
  fresh `CallScope` per call in a context variable, which every try below shares (retries
  run in the same task; hedged copies in tasks that copy the context, so they see the same
  scope object).
* `traced_try`, innermost, around the timeout: the span of one try, numbered from the
  scope (`gateway.attempt`); a try that starts while another try of the same call is still
  in flight is a hedged copy (`gateway.hedged`). The span is current while the backend
  runs (spans.py's context variable, not the OTel context), so an HTTP backend sends its
  `traceparent` and an executor records its queue wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue

from gateway.errors import CallError
from gateway.observability.spans import RecordedSpan, SpanRecorder, current_span, end_use, use_span
from gateway.types import BackendRequest, BackendResponse, Call, Policy

Attributes = Mapping[str, str | int | float | bool]


@dataclass(slots=True)
class CallScope:
    """The tries of one call so far, and how many are in flight now."""

    tries: int = 0
    in_flight: int = 0


_scope: ContextVar[CallScope | None] = ContextVar("gateway_call_scope", default=None)


@dataclass(frozen=True, slots=True)
class CallTrace:
    """What the spans of one configured call are named and carry (fixed at start-up)."""

    recorder: SpanRecorder
    name: str
    attributes: Attributes


def call_scope() -> Policy:
    """Give each call a `CallScope` its tries count themselves in."""

    def policy(inner: Call) -> Call:
        async def call(request: BackendRequest) -> BackendResponse:
            token = _scope.set(CallScope())
            try:
                return await inner(request)
            finally:
                _scope.reset(token)

        return call

    return policy


def traced_try(spec: CallTrace, host: str | None = None) -> Policy:
    """A client span around each try (`host`: the breaker's host, when known), current
    (spans.py's context variable) while the try runs."""
    shared: dict[str, AttributeValue] = dict(spec.attributes)
    if host is not None:
        shared["gateway.host"] = host
    span_name = f"call {spec.name}"
    recorder = spec.recorder

    def policy(inner: Call) -> Call:
        async def call(request: BackendRequest) -> BackendResponse:
            scope = _scope.get()  # None: a call that tries once (no call_scope), a first
            if scope is not None:
                scope.tries += 1
            parent = current_span()
            if type(parent) is not RecordedSpan or not parent.is_recording():
                # an unsampled request: its tries would record nothing either, and the
                # backend still gets the trace (its traceparent says "not sampled")
                return await inner(request)
            own: dict[str, AttributeValue] = {"gateway.attempt": 1}
            if scope is not None:
                own["gateway.attempt"] = scope.tries
                if scope.in_flight > 0:
                    own["gateway.hedged"] = True
                scope.in_flight += 1
            span = recorder.start_child(parent, span_name, SpanKind.CLIENT, own, shared)
            token = use_span(span)
            try:
                response = await inner(request)
                span.set_attribute("gateway.call.status", response.status)
                return response
            except CallError as exc:
                span.set_status(StatusCode.ERROR, str(exc))
                span.set_attribute("error.type", type(exc).__name__)
                if exc.status is not None:
                    span.set_attribute("gateway.call.status", exc.status)
                raise
            except asyncio.CancelledError:
                # a hedge that lost, or the endpoint deadline: neither success nor failure
                span.set_attribute("gateway.cancelled", True)
                raise
            finally:
                if scope is not None:
                    scope.in_flight -= 1
                end_use(token)
                span.end()

        return call

    return policy


def refusal_event(count: Callable[[], None], call: str, reason: str) -> Callable[[], None]:
    """`count` (a refusal counter), plus an event on the current span (the request's)."""
    attributes = {"gateway.call": call, "gateway.refusal": reason}

    def on_reject() -> None:
        count()
        current_span().add_event("call refused", attributes)

    return on_reject
