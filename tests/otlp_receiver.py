"""A real OTLP/HTTP trace receiver for tests and benchmarks: POST /v1/traces with an
`ExportTraceServiceRequest` (protobuf), decoded with opentelemetry-proto; spans kept in
memory, and waiters woken when enough have arrived (no sleeps)."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.threaded_http import BackloggedServer


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    events: tuple[str, ...]
    status_code: int


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class OtlpReceiver:
    """Listens on 127.0.0.1:<ephemeral>; `endpoint` is what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    def __init__(self, keep: bool = True) -> None:
        """`keep=False`: only count the spans (`count`), as a benchmark needs: making each
        one a `ReceivedSpan` takes CPU from the cores the measured gateway shares."""
        self.spans: list[ReceivedSpan] = []
        self.count = 0
        self.requests = 0
        self.keep = keep
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # kept-alive connections, as a collector keeps them: a new one per batch would
            # cost the exporting gateway a connect per batch that no collector makes it pay
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = BackloggedServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _add(self, request: ExportTraceServiceRequest) -> None:
        if not self.keep:
            with self._changed:
                self.count += sum(
                    len(scope.spans)
                    for resource in request.resource_spans
                    for scope in resource.scope_spans
                )
                self.requests += 1
            return
        spans = [
            ReceivedSpan(
                name=span.name,
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                kind=span.kind,
                attributes={a.key: _value(a.value) for a in span.attributes},
                events=tuple(e.name for e in span.events),
                status_code=span.status.code,
            )
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        with self._changed:
            self.spans.extend(spans)
            self.count += len(spans)
            self.requests += 1
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[ReceivedSpan]:
        """At least `count` spans (all received so far), or AssertionError after `timeout`."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.spans) >= count, timeout)
            assert arrived, f"{len(self.spans)} spans arrived, expected {count}"
            return list(self.spans)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    """`python -m tests.otlp_receiver`: a receiver in a process of its own (for
    benchmarks: decoding protobuf there does not slow the process that makes the load).
    Prints its endpoint, then, when its stdin closes, the number of spans received."""
    receiver = OtlpReceiver(keep=False)
    print(receiver.endpoint, flush=True)
    sys.stdin.read()
    receiver.close()
    print(receiver.count, flush=True)


if __name__ == "__main__":
    main()
