"""Where the cost of tracing and of the access log goes, in-process (no network).

    python -m benchmarks.spans [--count 20000]

(1) one client span as `policies/tracing.py` makes it (the gateway's recorder, spans.py:
    start, current, an attribute, end, queued) beside the same span through the SDK's
    `Tracer` and an attached OTel context, as the gateway made it before; (2) the OTLP
    protobuf encoding per span on the exporting thread: otlp.py's against the SDK's
    `encode_spans`; (3) one request's observation (web/observe.py: begin and finish, with
    the access log on) beside the same request without it; (4) one call span encoded with
    the call's fixed attributes its own, and shared (`RecordedSpan.shared`); (5) a request
    span under the default sampler, decided by spans.py, and through the SDK's sampler.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import time
from collections.abc import Callable, Sequence

from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    DEFAULT_ON,
    Decision,
    ParentBased,
    StaticSampler,
)
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue
from starlette.types import Message, Receive, Scope, Send

from gateway.observability.access_log import AccessLog
from gateway.observability.otlp import SpanEncoder
from gateway.observability.spans import RecordedSpan, SpanRecorder, end_use, use_span
from gateway.web.observe import Observer

ATTRIBUTES: dict[str, AttributeValue] = {
    "gateway.call": "product",
    "gateway.backend": "catalog",
    "gateway.backend.kind": "http",
    "http.request.method": "GET",
    "url.template": "/products/{id}",
    "gateway.host": "127.0.0.1:8101",
}


class Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def per_call(count: int, work: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(count):
        work()
    return (time.perf_counter() - started) / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20_000)
    args = parser.parse_args(argv)
    keep = Keep()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(keep))
    tracer = provider.get_tracer("bench")

    def sdk() -> None:
        span = tracer.start_span("call product", attributes={**ATTRIBUTES, "gateway.attempt": 1})
        token = context.attach(trace.set_span_in_context(span))
        span.set_attribute("gateway.call.status", 200)
        context.detach(token)
        span.end()

    ended: list[RecordedSpan] = []
    recorder = SpanRecorder(ALWAYS_ON, ended.append)
    parent = recorder.start_request("GET", context.Context(), {"url.path": "/three/1"})
    assert isinstance(parent, RecordedSpan)

    def ours() -> None:
        # as policies/tracing.py: the call's fixed attributes shared, the try's its own
        own: dict[str, AttributeValue] = {"gateway.attempt": 1}
        span = recorder.start_child(parent, "call product", SpanKind.CLIENT, own, ATTRIBUTES)
        token = use_span(span)
        span.set_attribute("gateway.call.status", 200)
        end_use(token)
        span.end()

    sdk_us = per_call(args.count, sdk) * 1e6
    ours_us = per_call(args.count, ours) * 1e6
    spans = keep.spans[: args.count]
    started = time.perf_counter()
    for i in range(0, len(spans), 512):
        encode_spans(spans[i : i + 512]).SerializePartialToString()
    sdk_encode_us = (time.perf_counter() - started) / len(spans) * 1e6
    encoder = SpanEncoder()
    started = time.perf_counter()
    for i in range(0, len(ended), 512):
        b"".join([encoder.encode(span) for span in ended[i : i + 512]])
    encode_us = (time.perf_counter() - started) / len(ended) * 1e6

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 300})

    async def send(message: Message) -> None:
        return None

    async def receive() -> Message:
        return {"type": "http.request"}

    log = AccessLog(10**7, io.BytesIO())
    observer = Observer(recorder=None, access_log=log)
    scope: Scope = {
        "type": "http",
        "path": "/api/x",
        "method": "GET",
        "headers": [],
        "client": ("127.0.0.1", 5555),
    }

    async def observed(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        observation = observer.begin(scope, "r-1")
        await app(scope, receive, send)
        observer.finish(observation, scope, "r-1", 200, 300, time.perf_counter() - started)

    async def requests() -> tuple[float, float]:
        timings = []
        for handler in (app, observed):
            started = time.perf_counter()
            for _ in range(args.count):
                await handler(scope, receive, send)
            timings.append((time.perf_counter() - started) / args.count)
        return timings[0], timings[1]

    bare, with_log = asyncio.run(requests())
    log.close()

    # (4) one call span encoded with the call's fixed attributes its own, and shared as
    # policies/tracing.py shares them (RecordedSpan.shared, encoded once per encoder)
    own = recorder.start_child(
        parent, "call product", SpanKind.CLIENT, {**ATTRIBUTES, "gateway.attempt": 1}
    )
    shared = recorder.start_child(
        parent, "call product", SpanKind.CLIENT, {"gateway.attempt": 1}, ATTRIBUTES
    )
    for span in (own, shared):
        span.set_attribute("gateway.call.status", 200)
        span.end()
    own_us = per_call(args.count, lambda: encoder.encode(own)) * 1e6
    shared_us = per_call(args.count, lambda: encoder.encode(shared)) * 1e6
    # (5) a request span under the default sampler (parentbased_always_on): decided by
    # spans.py itself, and through the SDK's should_sample (an equal sampler, not the same
    # object, takes that path)
    twin = ParentBased(StaticSampler(Decision.RECORD_AND_SAMPLE))
    empty = context.Context()
    fast, through_sdk = (SpanRecorder(s, ended.append) for s in (DEFAULT_ON, twin))
    fast_us = per_call(args.count, lambda: fast.start_request("GET", empty, {"a": "b"})) * 1e6
    sdk_sampled_us = (
        per_call(args.count, lambda: through_sdk.start_request("GET", empty, {"a": "b"})) * 1e6
    )
    print(f"span, SDK Tracer + OTel context       {sdk_us:6.1f} us")
    print(f"span, the gateway's recorder          {ours_us:6.1f} us")
    print(f"OTLP encoding per span, SDK           {sdk_encode_us:6.1f} us")
    print(f"OTLP encoding per span, otlp.py       {encode_us:6.1f} us")
    print(f"access log observation per request    {(with_log - bare) * 1e6:6.1f} us")
    print(f"call span encoded, attributes its own {own_us:6.1f} us")
    print(f"call span encoded, attributes shared  {shared_us:6.1f} us")
    print(f"request span, default sampler here    {fast_us:6.1f} us")
    print(f"request span, through the SDK sampler {sdk_sampled_us:6.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
