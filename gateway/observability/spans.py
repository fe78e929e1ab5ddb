"""A light span recorder on opentelemetry-api: the gateway's spans without the SDK's Span.

Why not the SDK's `Tracer`: with four spans a request, its span machinery (validated,
locked attribute maps, a span processor chain, an OTel context attached and detached per
span) and its OTLP encoding cost the always-sampled fan-out of `python -m
benchmarks.observability` 1.86x the CPU per request of the same gateway without tracing
(2026-12-02, shared 2-core machine); `python -m benchmarks.spans` put the SDK at 27-53 us to
make one span and 40-75 us to encode it, this recorder at 2-3 us and `otlp.py` at 2.7-3.7 us
(three runs); with both, the benchmark measured 1.14-1.22x.

What it keeps: spans are `opentelemetry.trace.Span`s (`get_span_context`, `set_attributes`,
`add_event`, `set_status`, `record_exception`, `is_recording`), trace and span ids are
random as the SDK's, and the request's span is sampled by the SDK's own sampler of
`OTEL_TRACES_SAMPLER[_ARG]`. Its children (the tries of its calls) follow its decision, as
the default parent-based samplers would decide. What it leaves out: the OTel context. The
current span lives in this module's context variable (`current_span`), which is all the
gateway reads; no third-party instrumentation runs in the process to read the other one.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from time import time_ns
from types import MappingProxyType, TracebackType

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, DEFAULT_ON, Decision, Sampler
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import Attributes, AttributeValue

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)

_current: ContextVar[trace.Span] = ContextVar("gateway_span", default=trace.INVALID_SPAN)

NO_ATTRIBUTES: Mapping[str, AttributeValue] = MappingProxyType({})
"""The `shared` attributes of a span that has none."""
_NO_EVENTS: tuple[()] = ()


def current_span() -> trace.Span:
    """The span of what runs now (a try of a call, else the request), or `INVALID_SPAN`."""
    return _current.get()


def use_span(span: trace.Span) -> Token[trace.Span]:
    """Make `span` current until `_current.reset(token)` (`end_use`)."""
    return _current.set(span)


def end_use(token: Token[trace.Span]) -> None:
    _current.reset(token)


class RecordedSpan(trace.Span):
    """A span being recorded; `end` hands it to the recorder's sink (the OTLP export).

    Plain fields, read by `otlp.SpanEncoder` (on the exporting thread) after the span has
    ended (the loop never writes it again then: `end` is idempotent, later writes ignored).
    Its attributes are `shared` (those of every span started at the same place, fixed at
    start-up: never copied per span, and encoded once by the exporter) plus its own
    `attributes`; setting a shared key makes them its own first, so no key is sent twice.
    """

    __slots__ = (
        "_context",
        "_sink",
        "attributes",
        "end_ns",
        "events",
        "kind",
        "name",
        "parent_id",
        "parent_remote",
        "sampled",
        "shared",
        "span_id",
        "start_ns",
        "status_code",
        "status_message",
        "trace_id",
        "trace_state",
    )

    def __init__(
        self,
        sink: Callable[[RecordedSpan], None],
        name: str,
        kind: SpanKind,
        trace_id: int,
        parent_id: int,
        parent_remote: bool,
        trace_state: TraceState | None,
        sampled: bool,
        attributes: dict[str, AttributeValue],
        shared: Mapping[str, AttributeValue] = NO_ATTRIBUTES,
    ) -> None:
        self._sink = sink
        self.name = name
        self.kind = kind
        self.trace_id = trace_id
        self.span_id = random.getrandbits(64) or 1
        self.parent_id = parent_id
        self.parent_remote = parent_remote
        self.trace_state = trace_state
        self.sampled = sampled
        self.attributes = attributes
        self.shared = shared
        # most spans have no event: a list is made by the first
        self.events: list[tuple[str, int, Mapping[str, AttributeValue]]] | tuple[()] = _NO_EVENTS
        self.status_code = StatusCode.UNSET
        self.status_message: str | None = None
        self.start_ns = time_ns()
        self.end_ns = 0
        self._context: SpanContext | None = None

    def __repr__(self) -> str:
        return f"<RecordedSpan {self.name!r} {self.trace_id:032x}-{self.span_id:016x}>"

    def get_span_context(self) -> SpanContext:
        # built when first asked (a log line, a traceparent): most spans are never asked
        context = self._context
        if context is None:
            flags = _SAMPLED if self.sampled else _NOT_SAMPLED
            context = SpanContext(self.trace_id, self.span_id, False, flags, self.trace_state)
            self._context = context
        return context

    def is_recording(self) -> bool:
        return self.end_ns == 0

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self.end_ns == 0:
            if key in self.shared:
                self._own_shared()
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        if self.end_ns == 0:
            if self.shared and not self.shared.keys().isdisjoint(attributes):
                self._own_shared()
            self.attributes.update(attributes)

    def _own_shared(self) -> None:
        self.attributes = {**self.shared, **self.attributes}
        self.shared = NO_ATTRIBUTES

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self.end_ns == 0:
            event = (name, timestamp or time_ns(), dict(attributes or {}))
            if isinstance(self.events, list):
                self.events.append(event)
            else:
                self.events = [event]

    def update_name(self, name: str) -> None:
        if self.end_ns == 0:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_ns != 0:
            return
        if isinstance(status, Status):
            self.status_code, self.status_message = status.status_code, status.description
        else:
            self.status_code, self.status_message = status, description

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        # the attributes the SDK gives the "exception" event (semantic conventions)
        described: dict[str, AttributeValue] = {
            "exception.type": type(exception).__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        described.update(attributes or {})
        self.add_event("exception", described, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_ns != 0:
            return
        self.end_ns = end_time or time_ns()
        if self.sampled:
            self._sink(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_val is not None:
            self.record_exception(exc_val, escaped=True)
            self.set_status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}")
        self.end()


class SpanRecorder:
    """Starts the gateway's spans; finished sampled ones go to `sink`."""

    def __init__(self, sampler: Sampler, sink: Callable[[RecordedSpan], None]) -> None:
        self.sampler = sampler
        self.sink = sink

    def __repr__(self) -> str:
        return f"<SpanRecorder {self.sampler.get_description()}>"

    def start_request(
        self, name: str, incoming: Context, attributes: dict[str, AttributeValue]
    ) -> trace.Span:
        """The server span of a request, continuing the caller's trace in `incoming` (the
        extracted `traceparent`), sampled as `OTEL_TRACES_SAMPLER` says."""
        parent = trace.get_current_span(incoming).get_span_context()
        if parent.is_valid:
            trace_id, parent_id, remote = parent.trace_id, parent.span_id, parent.is_remote
        else:
            trace_id, parent_id, remote = random.getrandbits(128) or 1, 0, False
        sampler = self.sampler
        if sampler is ALWAYS_ON or sampler is DEFAULT_ON:
            # `always_on` and `parentbased_always_on` (the default), decided here as the SDK
            # decides them: its call, a SamplingResult and a copy of the attributes it hands
            # back unchanged: a request span 4.3-4.4 us through it, 1.8-2.2 us decided here
            # (`python -m benchmarks.spans`, 2026-12-02, two runs)
            record = sampler is ALWAYS_ON or not parent.is_valid or parent.trace_flags.sampled
            sampled = record
            state = parent.trace_state if parent.is_valid else None
        else:
            result = sampler.should_sample(incoming, trace_id, name, SpanKind.SERVER, attributes)
            record = result.decision is not Decision.DROP
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            state = result.trace_state if result.trace_state is not None else parent.trace_state
            if result.attributes:
                attributes.update(result.attributes)  # the caller's own dict, made for this
        if not record:
            # nothing recorded, but the backends still learn the trace (and "not sampled")
            flags = _SAMPLED if sampled else _NOT_SAMPLED
            context = SpanContext(trace_id, random.getrandbits(64) or 1, False, flags, state)
            return trace.NonRecordingSpan(context)
        return RecordedSpan(
            self.sink, name, SpanKind.SERVER, trace_id, parent_id, remote, state or None,
            sampled, attributes,
        )  # fmt: skip

    def start_child(
        self,
        parent: RecordedSpan,
        name: str,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
        shared: Mapping[str, AttributeValue] = NO_ATTRIBUTES,
    ) -> RecordedSpan:
        """A span under `parent` (recording), sampled as it is; `shared`: the attributes of
        every span started at this place, never changed (see `RecordedSpan`)."""
        return RecordedSpan(
            self.sink, name, kind, parent.trace_id, parent.span_id, False, parent.trace_state,
            parent.sampled, attributes, shared,
        )  # fmt: skip
