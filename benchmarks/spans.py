"""Where the cost of tracing and of the access log goes, in-process (no network).

    python -m benchmarks.spans [--count 20000]

(1) one client span as `policies/tracing.py` makes it (`start_span`, every attribute given
    at the start, an explicit context attach) beside `start_as_current_span` with attribute
    writes one by one; (2) the SDK's OTLP protobuf encoding per span, as its exporter thread
    runs it; (3) one request through `web/observe.py` with the access log on, beside the
    same request without the layer.
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
from opentelemetry.util.types import AttributeValue
from starlette.types import Message, Receive, Scope, Send

from gateway.observability.access_log import AccessLog
from gateway.web.observe import ObserveMiddleware

ATTRIBUTES: dict[str, AttributeValue] = {
    "gateway.call": "product",
    "gateway.backend": "catalog",
    "gateway.backend.kind": "http",
    "http.request.method": "GET",
    "url.template": "/products/{id}",
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
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(keep))
    tracer = provider.get_tracer("bench")

    def ours() -> None:
        span = tracer.start_span("call product", attributes={**ATTRIBUTES, "gateway.attempt": 1})
        token = context.attach(trace.set_span_in_context(span))
        span.set_attribute("gateway.call.status", 200)
        context.detach(token)
        span.end()

    def one_by_one() -> None:
        with tracer.start_as_current_span("call product") as span:
            for key, value in {**ATTRIBUTES, "gateway.attempt": 1}.items():
                span.set_attribute(key, value)
            span.set_attribute("gateway.call.status", 200)

    ours_us = per_call(args.count, ours) * 1e6
    by_one_us = per_call(args.count, one_by_one) * 1e6
    spans = keep.spans[: args.count]
    started = time.perf_counter()
    for i in range(0, len(spans), 512):
        encode_spans(spans[i : i + 512]).SerializePartialToString()
    encode_us = (time.perf_counter() - started) / len(spans) * 1e6

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 300})

    async def send(message: Message) -> None:
        return None

    async def receive() -> Message:
        return {"type": "http.request"}

    log = AccessLog(10**7, io.BytesIO())
    layer = ObserveMiddleware(app, tracer=None, access_log=log)
    scope: Scope = {
        "type": "http",
        "path": "/api/x",
        "method": "GET",
        "headers": [],
        "client": ("127.0.0.1", 5555),
    }

    async def requests() -> tuple[float, float]:
        timings = []
        for handler in (app, layer):
            started = time.perf_counter()
            for _ in range(args.count):
                await handler(scope, receive, send)
            timings.append((time.perf_counter() - started) / args.count)
        return timings[0], timings[1]

    bare, observed = asyncio.run(requests())
    log.close()
    print(f"span as policies/tracing.py makes it   {ours_us:6.1f} us")
    print(f"span, start_as_current_span, 1 by 1    {by_one_us:6.1f} us")
    print(f"OTLP encoding per span (exporter)      {encode_us:6.1f} us")
    print(f"access log layer per request           {(observed - bare) * 1e6:6.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
