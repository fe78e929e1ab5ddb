"""OpenTelemetry traces: the app's span recorder, exported over OTLP/HTTP (protobuf).

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`Settings.otel_exporter_otlp_endpoint`):
then nothing is wrapped, no span is made and no header is added, so the hot path pays
nothing. When on, the standard variables apply: `OTEL_SERVICE_NAME` and
`OTEL_RESOURCE_ATTRIBUTES` (read by the SDK's `Resource`), `OTEL_TRACES_SAMPLER[_ARG]` (the
SDK's sampler), `OTEL_PROPAGATORS` (the API's propagators), and the exporter's
`OTEL_EXPORTER_OTLP_[TRACES_]*` and `OTEL_BSP_*` (read in settings.py).

Spans are made by the gateway's own light recorder (`spans.py`) and leave through its own
export (`otlp.py`), not the SDK's `Tracer` and `BatchSpanProcessor`: those cost 1.86x the
CPU per request of the fan-out benchmark (docs/observability.md). The loop only appends a
finished span to a bounded deque (`OTEL_BSP_MAX_QUEUE_SIZE`, default 2048); a thread
exports batches. A collector that is down therefore never blocks the loop and never grows
memory: past the bound the oldest spans are dropped, and `gateway_trace_spans_dropped_total`
counts them (`reason="queue_full"`), as it counts spans whose export failed
(`"export_failed"`).

Each app has its own recorder (nothing global): tests and benchmarks build many apps in
one process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from opentelemetry.context import Context
from opentelemetry.propagate import get_global_textmap
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, set_span_in_context
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.config.settings import Settings
from gateway.errors import ConfigError
from gateway.observability.otlp import Destination, Sender, SpanExport
from gateway.observability.spans import RecordedSpan, SpanRecorder, current_span

SERVICE_NAME = "fanout-gateway"
"""The default `service.name`; `OTEL_SERVICE_NAME` overrides it."""


class _SpanCollector(Collector):
    """`/metrics`: spans dropped (by reason) and waiting for export."""

    def __init__(self, export: SpanExport) -> None:
        self.export = export

    def collect(self) -> Iterator[Metric]:
        counts = self.export.counts
        dropped = CounterMetricFamily(
            "gateway_trace_spans_dropped",
            "Finished spans never delivered: the export queue was full, or the collector "
            "did not accept their batch.",
            labels=["reason"],
        )
        dropped.add_metric(["queue_full"], counts.dropped)
        dropped.add_metric(["export_failed"], counts.failed)
        queued = GaugeMetricFamily(
            "gateway_trace_export_queue_spans",
            "Finished spans waiting for export (bounded by OTEL_BSP_MAX_QUEUE_SIZE).",
        )
        queued.add_metric([], self.export.queued)
        ended = CounterMetricFamily("gateway_trace_spans_ended", "Sampled spans finished.")
        ended.add_metric([], counts.ended)
        yield from (dropped, queued, ended)


def tracing_enabled(settings: Settings) -> bool:
    """Whether this process traces at all (`OTEL_EXPORTER_OTLP_ENDPOINT` is set)."""
    return settings.otel_exporter_otlp_endpoint is not None


@dataclass(frozen=True, slots=True)
class Tracing:
    """The app's span recorder and how its spans leave the process."""

    recorder: SpanRecorder
    export: SpanExport
    shutdown_timeout: float

    def shutdown(self) -> None:
        """Export what is queued and stop the exporting thread (blocking: run it off the
        loop), within `OTEL_BSP_EXPORT_TIMEOUT`."""
        self.export.shutdown(self.shutdown_timeout)


def parse_headers(text: str | None) -> dict[str, str]:
    """`key=value,key2=value2` (values URL-encoded), as `OTEL_EXPORTER_OTLP_HEADERS`."""
    headers: dict[str, str] = {}
    for pair in (text or "").split(","):
        name, equals, value = pair.partition("=")
        if equals and name.strip():
            headers[unquote(name.strip()).lower()] = unquote(value.strip())
    return headers


def destination(settings: Settings) -> Destination:
    """Where spans go, each `OTEL_EXPORTER_OTLP_TRACES_*` over its general variable."""
    s = settings
    url = s.otel_exporter_otlp_traces_endpoint
    if url is None:
        base = s.otel_exporter_otlp_endpoint or "http://localhost:4318"
        url = base + ("v1/traces" if base.endswith("/") else "/v1/traces")
    return Destination(
        url=url,
        headers=parse_headers(s.otel_exporter_otlp_traces_headers or s.otel_exporter_otlp_headers),
        timeout=s.otel_exporter_otlp_traces_timeout or s.otel_exporter_otlp_timeout or 10.0,
        compression=(
            s.otel_exporter_otlp_traces_compression or s.otel_exporter_otlp_compression or "none"
        ),
        certificate=s.otel_exporter_otlp_traces_certificate or s.otel_exporter_otlp_certificate,
        client_certificate=(
            s.otel_exporter_otlp_traces_client_certificate
            or s.otel_exporter_otlp_client_certificate
        ),
        client_key=s.otel_exporter_otlp_traces_client_key or s.otel_exporter_otlp_client_key,
    )


def open_tracing(settings: Settings, registry: CollectorRegistry) -> Tracing | None:
    """The app's tracing, or None when `OTEL_EXPORTER_OTLP_ENDPOINT` is unset."""
    if not tracing_enabled(settings):
        return None
    batch_size = settings.otel_bsp_max_export_batch_size
    if batch_size > settings.otel_bsp_max_queue_size:  # the SDK's check, in its words
        raise ConfigError(
            [
                "environment: OTEL_BSP_*: max_export_batch_size must be less than or equal "
                "to max_queue_size."
            ]
        )
    # the SDK's own reading of OTEL_TRACES_SAMPLER[_ARG] (names, ratio, entry points)
    sampler = TracerProvider(shutdown_on_exit=False).sampler
    resource = Resource.create({"service.name": SERVICE_NAME})
    stopping = threading.Event()
    export = SpanExport(
        Sender(destination(settings), stopping),
        dict(resource.attributes),
        "gateway",
        max_queue=settings.otel_bsp_max_queue_size,
        batch_size=batch_size,
        schedule_delay=settings.otel_bsp_schedule_delay / 1000,
        stopping=stopping,
    )
    registry.register(_SpanCollector(export))
    return Tracing(
        SpanRecorder(sampler, export.push), export, settings.otel_bsp_export_timeout / 1000
    )


def incoming_context(headers: Sequence[tuple[bytes, bytes]]) -> Context:
    """The caller's trace context (`traceparent`/`tracestate`), or an empty one."""
    carrier: dict[str, str] = {}
    for name, value in headers:
        if name in (b"traceparent", b"tracestate", b"baggage"):
            carrier[name.decode("latin-1")] = value.decode("latin-1")
    return get_global_textmap().extract(carrier) if carrier else Context()


_W3C_FIELDS = frozenset({"traceparent", "tracestate", "baggage"})
_direct: tuple[object, bool] = (None, False)
"""(the global propagator, whether it is W3C's alone): checked again when it changes."""


def _formats_directly() -> bool:
    """Whether `OTEL_PROPAGATORS` is the default (tracecontext, baggage): then the headers
    are formatted from the span itself, without a Context and the propagator's round trip
    (the gateway never sets baggage, so there is none to send)."""
    global _direct
    textmap = get_global_textmap()
    if _direct[0] is not textmap:
        _direct = (textmap, textmap.fields <= _W3C_FIELDS)
    return _direct[1]


def _format(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def outgoing_headers() -> list[tuple[str, str]]:
    """`traceparent` (and `tracestate`) of the current span, for a backend request
    (through the propagators of `OTEL_PROPAGATORS`)."""
    span = current_span()
    if _formats_directly():
        if type(span) is RecordedSpan:
            headers = [("traceparent", _format(span.trace_id, span.span_id, span.sampled))]
            if span.trace_state is not None:
                headers.append(("tracestate", span.trace_state.to_header()))
            return headers
        context = span.get_span_context()
        if not context.is_valid:
            return []
        headers = [
            ("traceparent", _format(context.trace_id, context.span_id, context.trace_flags.sampled))
        ]
        if context.trace_state:
            headers.append(("tracestate", context.trace_state.to_header()))
        return headers
    carrier: dict[str, str] = {}
    get_global_textmap().inject(
        carrier, set_span_in_context(NonRecordingSpan(span.get_span_context()))
    )
    return list(carrier.items())


def traceparent() -> str | None:
    """The current span's W3C `traceparent` value, or None outside a valid span."""
    context = current_span().get_span_context()
    if not context.is_valid:
        return None
    return _format(context.trace_id, context.span_id, context.trace_flags.sampled)


def note(attributes: Mapping[str, str | int | float | bool]) -> None:
    """Set attributes on the current span (a try of a call); nothing outside a span."""
    span = current_span()
    if span.is_recording():
        span.set_attributes(attributes)
