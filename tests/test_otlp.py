"""The hand-written OTLP encoding (gateway/observability/otlp.py) read back with
opentelemetry-proto's generated classes, and the OTEL_EXPORTER_OTLP_* resolution."""

from __future__ import annotations

import pytest
from opentelemetry.context import Context
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_ON,
    Decision,
    ParentBased,
    Sampler,
    StaticSampler,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from gateway.config.settings import Settings
from gateway.observability.otlp import SpanEncoder, batch_body, encode_request
from gateway.observability.spans import RecordedSpan, SpanRecorder
from gateway.observability.tracing import destination, parse_headers


def decoded(spans: list[RecordedSpan]) -> ExportTraceServiceRequest:
    resource, scope = encode_request({"service.name": "fanout-gateway", "n": 3}, "gateway")
    encoder = SpanEncoder()
    request = ExportTraceServiceRequest()
    request.ParseFromString(batch_body(resource, scope, [encoder.encode(s) for s in spans]))
    return request


def plain(value: AnyValue) -> object:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [plain(v) for v in value.array_value.values]
    assert kind is not None
    return getattr(value, kind)


def test_a_request_span_and_its_child_read_back_as_written() -> None:
    ended: list[RecordedSpan] = []
    recorder = SpanRecorder(ALWAYS_ON, ended.append)
    root = recorder.start_request("GET", Context(), {"url.path": "/x/é", "big": 2**40})
    assert isinstance(root, RecordedSpan)
    child = recorder.start_child(
        root, "call a", SpanKind.CLIENT, {"n": -5, "f": 1.5, "b": False, "l": ["p", "q"]}
    )
    child.set_status(StatusCode.ERROR, "a answered 503")
    child.end()
    root.add_event("call refused", {"gateway.call": "b"})
    root.update_name("GET /x/{id}")
    root.end()
    root.end()  # twice: still one span
    root.set_attribute("late", 1)  # after the end: ignored

    request = decoded(ended)
    (resource_spans,) = request.resource_spans
    assert {a.key: plain(a.value) for a in resource_spans.resource.attributes} == {
        "service.name": "fanout-gateway",
        "n": 3,
    }
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.name == "gateway"
    first, second = scope_spans.spans
    assert (first.name, first.kind) == ("call a", Span.SPAN_KIND_CLIENT)
    assert {a.key: plain(a.value) for a in first.attributes} == {
        "n": -5,
        "f": 1.5,
        "b": False,
        "l": ["p", "q"],
    }
    assert first.status.code == Status.STATUS_CODE_ERROR
    assert first.status.message == "a answered 503"
    assert first.parent_span_id == second.span_id
    assert first.trace_id == second.trace_id == root.trace_id.to_bytes(16, "big")
    assert (second.name, second.kind) == ("GET /x/{id}", Span.SPAN_KIND_SERVER)
    assert {a.key: plain(a.value) for a in second.attributes} == {"url.path": "/x/é", "big": 2**40}
    assert second.parent_span_id == b""
    assert [e.name for e in second.events] == ["call refused"]
    assert {a.key: plain(a.value) for a in second.events[0].attributes} == {"gateway.call": "b"}
    assert second.status.code == Status.STATUS_CODE_UNSET
    assert 0 < second.start_time_unix_nano <= second.end_time_unix_nano
    assert second.flags == 0x101  # has-is-remote, not remote, sampled


def test_shared_attributes_are_sent_once_with_the_spans_own_and_never_twice() -> None:
    ended: list[RecordedSpan] = []
    recorder = SpanRecorder(ALWAYS_ON, ended.append)
    root = recorder.start_request("GET", Context(), {})
    assert isinstance(root, RecordedSpan)
    shared = {"gateway.backend": "svc", "url.template": "/a/{id}"}
    plain_try = recorder.start_child(
        root, "call a", SpanKind.CLIENT, {"gateway.attempt": 1}, shared
    )
    plain_try.set_attribute("gateway.call.status", 200)
    plain_try.end()
    renamed = recorder.start_child(root, "call a", SpanKind.CLIENT, {"gateway.attempt": 2}, shared)
    renamed.set_attribute("url.template", "/other")  # a shared key: the span's own from now
    renamed.set_attributes({"gateway.backend": "elsewhere", "x": 1})
    renamed.add_event("first", {"k": "v"})
    renamed.add_event("second")
    renamed.end()
    first, second = (
        decoded([plain_try, renamed, plain_try]).resource_spans[0].scope_spans[0].spans[:2]
    )
    assert [a.key for a in first.attributes].count("url.template") == 1
    assert {a.key: plain(a.value) for a in first.attributes} == {
        "gateway.backend": "svc",
        "url.template": "/a/{id}",
        "gateway.attempt": 1,
        "gateway.call.status": 200,
    }
    keys = [a.key for a in second.attributes]
    assert sorted(keys) == sorted(set(keys))  # no key twice
    assert {a.key: plain(a.value) for a in second.attributes} == {
        "gateway.backend": "elsewhere",
        "url.template": "/other",
        "gateway.attempt": 2,
        "x": 1,
    }
    assert [e.name for e in second.events] == ["first", "second"]
    assert shared == {"gateway.backend": "svc", "url.template": "/a/{id}"}  # never written


def test_a_remote_parent_is_continued_with_its_tracestate() -> None:
    ended: list[RecordedSpan] = []
    recorder = SpanRecorder(ALWAYS_ON, ended.append)
    parent = SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "x")]),
    )
    span = recorder.start_request("GET", set_span_in_context(NonRecordingSpan(parent)), {})
    span.end()
    (received,) = decoded(ended).resource_spans[0].scope_spans[0].spans
    assert received.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert received.parent_span_id.hex() == "00f067aa0ba902b7"
    assert received.trace_state == "vendor=x"
    assert received.flags == 0x301  # has-is-remote, remote, sampled


def test_a_dropped_request_records_nothing_but_keeps_its_trace() -> None:
    ended: list[RecordedSpan] = []
    span = SpanRecorder(ALWAYS_OFF, ended.append).start_request("GET", Context(), {})
    assert not span.is_recording()
    context = span.get_span_context()
    assert context.is_valid and not context.trace_flags.sampled
    span.end()
    assert ended == []


def _parent(sampled: bool) -> Context:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    context = SpanContext(
        7, 9, is_remote=True, trace_flags=flags, trace_state=TraceState([("v", "x")])
    )
    return set_span_in_context(NonRecordingSpan(context))


@pytest.mark.parametrize("fast", [ALWAYS_ON, DEFAULT_ON])
@pytest.mark.parametrize("incoming", ["none", "sampled", "not sampled"], ids=str)
def test_the_samplers_decided_without_the_sdk_decide_as_the_sdk_does(
    fast: Sampler, incoming: str
) -> None:
    # a sampler equal to `fast` but not the same object takes the SDK's own path
    twin = (
        ParentBased(StaticSampler(Decision.RECORD_AND_SAMPLE))
        if fast is DEFAULT_ON
        else (StaticSampler(Decision.RECORD_AND_SAMPLE))
    )
    context = Context() if incoming == "none" else _parent(incoming == "sampled")
    ended: list[RecordedSpan] = []
    spans = [
        SpanRecorder(sampler, ended.append).start_request("GET", context, {"a": 1})
        for sampler in (fast, twin)
    ]
    ours, sdk = (span.get_span_context() for span in spans)
    assert [type(span) for span in spans] == [type(spans[1])] * 2
    assert [span.is_recording() for span in spans] == [spans[1].is_recording()] * 2
    assert ours.trace_flags == sdk.trace_flags
    assert ours.trace_state == sdk.trace_state
    if incoming != "none":
        assert ours.trace_id == sdk.trace_id == 7
    if isinstance(spans[0], RecordedSpan) and isinstance(spans[1], RecordedSpan):
        assert spans[0].parent_id == spans[1].parent_id
        assert spans[0].attributes == spans[1].attributes == {"a": 1}


@pytest.mark.parametrize(
    ("text", "headers"),
    [
        (None, {}),
        ("", {}),
        ("api-key=s3cr%20t", {"api-key": "s3cr t"}),
        ("A=1, b = 2 ,broken,=x", {"a": "1", "b": "2"}),
    ],
)
def test_export_headers_are_parsed_as_the_specification_says(
    text: str | None, headers: dict[str, str]
) -> None:
    assert parse_headers(text) == headers


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, "http://c:4318/v1/traces"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://t/traces",
            },
            "https://t/traces",
        ),
    ],
)
def test_the_traces_endpoint_wins_over_the_general_one(env: dict[str, str], url: str) -> None:
    timeouts = {"OTEL_EXPORTER_OTLP_TIMEOUT": "3", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2"}
    resolved = destination(Settings.model_validate({**env, **timeouts}))
    assert resolved.url == url
    assert resolved.timeout == 2
