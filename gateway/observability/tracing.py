"""OpenTelemetry traces: one tracer provider per app, exported over OTLP/HTTP (protobuf).

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`Settings.otel_exporter_otlp_endpoint`):
then nothing is wrapped, no span is made and no header is added, so the hot path pays
nothing. When on, the SDK reads the other standard variables itself (`OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_EXPORTER_OTLP_HEADERS`,
`OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*`, `OTEL_PROPAGATORS`).

Spans leave through the SDK's `BatchSpanProcessor`: the loop only appends a finished span
to a bounded deque (`OTEL_BSP_MAX_QUEUE_SIZE`, default 2048); a thread of the SDK exports
batches. A collector that is down therefore never blocks the loop and never grows memory:
past the bound the oldest spans are dropped, and `gateway_trace_spans_dropped_total` counts
them (`reason="queue_full"`), as it counts spans whose export failed (`"export_failed"`).

The provider is the app's own (not the global one): tests and benchmarks build many apps in
one process, and the global provider can be set only once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import get_global_textmap
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.config.settings import Settings
from gateway.errors import ConfigError

SERVICE_NAME = "fanout-gateway"
"""The default `service.name`; `OTEL_SERVICE_NAME` overrides it."""


@dataclass(slots=True)
class SpanCounts:
    """Where the finished spans went; written by the loop (ended, dropped) and by the
    exporting thread (handed, failed): each counter has one writer."""

    max_queue: int
    ended: int = 0
    handed: int = 0
    """Spans taken off the queue by the exporting thread."""
    dropped: int = 0
    """Spans pushed out of the full queue (the SDK drops the oldest)."""
    failed: int = 0
    """Spans of batches the collector did not accept (down, refused, timed out)."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def queued(self) -> int:
        return max(0, self.ended - self.handed - self.dropped)


class _CountingExporter(SpanExporter):
    """The OTLP exporter, counting what it was handed and what it could not deliver."""

    def __init__(self, inner: SpanExporter, counts: SpanCounts) -> None:
        self.inner = inner
        self.counts = counts

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.counts.lock:
            self.counts.handed += len(spans)
        result = self.inner.export(spans)
        if result is not SpanExportResult.SUCCESS:
            with self.counts.lock:
                self.counts.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _CountingProcessor(SpanProcessor):
    """A `BatchSpanProcessor` that counts the spans its full queue pushes out."""

    def __init__(self, inner: BatchSpanProcessor, counts: SpanCounts) -> None:
        self.inner = inner
        self.counts = counts

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        counts = self.counts
        with counts.lock:
            if counts.queued >= counts.max_queue:
                counts.dropped += 1  # the deque is full: appending pushes the oldest out
            counts.ended += 1
        self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _SpanCollector(Collector):
    """`/metrics`: spans dropped (by reason) and waiting for export."""

    def __init__(self, counts: SpanCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        dropped = CounterMetricFamily(
            "gateway_trace_spans_dropped",
            "Finished spans never delivered: the export queue was full, or the collector "
            "did not accept their batch.",
            labels=["reason"],
        )
        dropped.add_metric(["queue_full"], self.counts.dropped)
        dropped.add_metric(["export_failed"], self.counts.failed)
        queued = GaugeMetricFamily(
            "gateway_trace_export_queue_spans",
            "Finished spans waiting for export (bounded by OTEL_BSP_MAX_QUEUE_SIZE).",
        )
        queued.add_metric([], self.counts.queued)
        ended = CounterMetricFamily("gateway_trace_spans_ended", "Sampled spans finished.")
        ended.add_metric([], self.counts.ended)
        yield from (dropped, queued, ended)


def tracing_enabled(settings: Settings) -> bool:
    """Whether this process traces at all (`OTEL_EXPORTER_OTLP_ENDPOINT` is set)."""
    return settings.otel_exporter_otlp_endpoint is not None


@dataclass(frozen=True, slots=True)
class Tracing:
    """The app's tracer and how its spans leave the process."""

    provider: TracerProvider
    tracer: trace.Tracer
    counts: SpanCounts

    def shutdown(self) -> None:
        """Export what is queued and stop the exporting thread (blocking: run it off the
        loop). The exporter gives up within `OTEL_EXPORTER_OTLP_TIMEOUT`."""
        self.provider.shutdown()


def open_tracing(settings: Settings, registry: CollectorRegistry) -> Tracing | None:
    """The app's tracing, or None when `OTEL_EXPORTER_OTLP_ENDPOINT` is unset."""
    if not tracing_enabled(settings):
        return None
    # imported here: the exporter pulls in `requests`, which a process without tracing
    # never needs
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    counts = SpanCounts(max_queue=settings.otel_bsp_max_queue_size)
    exporter = _CountingExporter(OTLPSpanExporter(), counts)
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    try:
        batch = BatchSpanProcessor(exporter, max_queue_size=settings.otel_bsp_max_queue_size)
    except ValueError as exc:  # OTEL_BSP_* values that do not fit together
        raise ConfigError([f"environment: OTEL_BSP_*: {exc}"]) from None
    provider.add_span_processor(_CountingProcessor(batch, counts))
    registry.register(_SpanCollector(counts))
    return Tracing(provider, provider.get_tracer("gateway"), counts)


def incoming_context(headers: Sequence[tuple[bytes, bytes]]) -> Context:
    """The caller's trace context (`traceparent`/`tracestate`), or an empty one."""
    carrier: dict[str, str] = {}
    for name, value in headers:
        if name in (b"traceparent", b"tracestate", b"baggage"):
            carrier[name.decode("latin-1")] = value.decode("latin-1")
    return get_global_textmap().extract(carrier) if carrier else Context()


def outgoing_headers() -> list[tuple[str, str]]:
    """`traceparent` (and `tracestate`) of the current span, for a backend request
    (through the propagators of `OTEL_PROPAGATORS`)."""
    carrier: dict[str, str] = {}
    get_global_textmap().inject(carrier)
    return list(carrier.items())


def traceparent() -> str | None:
    """The current span's W3C `traceparent` value, or None outside a valid span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def note(attributes: Mapping[str, str | int | float | bool]) -> None:
    """Set attributes on the current span (a try of a call); nothing outside a span."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)
