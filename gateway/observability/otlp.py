"""OTLP/HTTP export of finished spans: a bounded queue, a thread that encodes batches, one
HTTP connection.

The loop only appends a finished span to a bounded deque (atomic, no lock) and counts it
(encoding it there instead measured worse: 1.29-1.30x against 1.14-1.22x for the benchmark);
past `OTEL_BSP_MAX_QUEUE_SIZE` the oldest span is pushed out and counted as dropped. The
thread wakes every `OTEL_BSP_SCHEDULE_DELAY` ms, or as soon as a batch is full
(`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`), encodes the spans and POSTs them as one
`ExportTraceServiceRequest` (`application/x-protobuf`) over a kept-alive `http.client`
connection. A collector that is down fails its batches quickly (they are counted as failed)
and never blocks the loop.

The protobuf is written by hand (`SpanEncoder`): the wire format of the few messages a span
needs is small and frozen, and the thread shares the process's GIL with the loop, so its
cost per span is the loop's too. `python -m benchmarks.spans` measured the SDK's encoder
(`encode_spans`, through the generated classes) at 40-75 us a span against 2.7-3.7 us here,
on a busy 2-core machine (2026-12-02, three runs); tests/otlp_receiver.py and
tests/test_otlp.py decode what this writes with opentelemetry-proto's classes.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import ssl
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue

from gateway.observability.spans import RecordedSpan

log = logging.getLogger("gateway.tracing")

# --- the protobuf wire format (opentelemetry/proto/trace/v1/trace.proto and common.proto)

_BYTES = [bytes([n]) for n in range(128)]


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _BYTES[n]
    if n < 0x4000:  # a span's length, mostly
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, data: bytes) -> bytes:
    """A length-delimited field (`tag` = field number << 3 | 2, below 128)."""
    return _BYTES[tag] + _varint(len(data)) + data


def _any_value(value: object) -> bytes:
    """An `AnyValue`: string 1, bool 2, int 3, double 4, array 5."""
    if isinstance(value, str):
        return _field(0x0A, value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)  # int64: two's complement
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        return _field(0x2A, b"".join(_field(0x0A, _any_value(v)) for v in value))
    return _field(0x0A, str(value).encode())


_CACHE_MAX = 4096


def _key_value(tag: int, key: str, value: object) -> bytes:
    return _field(tag, _field(0x0A, key.encode()) + _field(0x12, _any_value(value)))


def _attributes(tag: int, attributes: Mapping[str, AttributeValue]) -> bytes:
    return b"".join([_key_value(tag, k, v) for k, v in attributes.items()])


_TIMES = struct.Struct("<BQBQ")  # start (field 7) and end (field 8), fixed64
_LOW = (1 << 64) - 1
# trace_id (field 1, 16 bytes as two halves) and span_id (2), [parent_span_id (4)], each
# after its tag and length (0x0A10: field 1, 16 bytes), big-endian as the ids are written
_IDS = struct.Struct(">HQQHQ")
_IDS_PARENT = struct.Struct(">HQQHQHQ")
# flags (field 16, fixed32) by (remote parent, sampled): SpanFlags as the SDK sets them
# (HAS_IS_REMOTE 0x100, IS_REMOTE 0x200) over the trace flags
_FLAGS = {
    (remote, sampled): struct.pack("<2sI", b"\x85\x01", 0x100 | remote * 0x200 | sampled)
    for remote in (False, True)
    for sampled in (False, True)
}
_KINDS = {kind: b"\x30" + _BYTES[kind.value + 1] for kind in SpanKind}  # OTLP's count from 1
_STATUS = {StatusCode.OK: 1, StatusCode.ERROR: 2}


class SpanEncoder:
    """Encodes ended spans, remembering the parts that repeat (one per exporting thread)."""

    __slots__ = ("names", "pairs", "shared")

    def __init__(self) -> None:
        self.shared: dict[int, tuple[Mapping[str, AttributeValue], bytes]] = {}
        """Encoded `RecordedSpan.shared` attributes by the mapping's id (the mapping kept,
        so its id cannot be reused while here): a call's fixed attributes (backend, kind,
        template, host) are one mapping made at start-up, encoded once instead of once a
        span (a call span 3.3-3.5 us with them its own, 2.5-2.8 us shared: `python -m
        benchmarks.spans`, 2026-12-02, two runs); emptied
        when full, as the others."""
        self.pairs: dict[tuple[str, object], bytes] = {}
        """Encoded span attributes (`KeyValue`s as field 9) by (key, value): most repeat (a
        call's backend, its template, its status, its attempt); emptied when full, so
        unique values (a request id) cannot grow it."""
        self.names: dict[str, bytes] = {}
        """Encoded span names (field 5): route templates and calls, a bounded set; emptied
        when full all the same."""

    def encode(self, span: RecordedSpan) -> bytes:
        """One ended span as field 2 (`spans`) of a `ScopeSpans`."""
        trace_id = span.trace_id
        high, low = trace_id >> 64, trace_id & _LOW
        if span.parent_id:  # trace_id (1), span_id (2) and parent_span_id (4): one pack
            ids = _IDS_PARENT.pack(0x0A10, high, low, 0x1208, span.span_id, 0x2208, span.parent_id)
        else:
            ids = _IDS.pack(0x0A10, high, low, 0x1208, span.span_id)
        parts = [ids]
        if span.trace_state is not None:
            parts.append(_field(0x1A, span.trace_state.to_header().encode()))
        names = self.names
        name = names.get(span.name)
        if name is None:
            if len(names) >= _CACHE_MAX:
                names.clear()
            name = names[span.name] = _field(0x2A, span.name.encode())
        parts.append(name)
        parts.append(_KINDS[span.kind])
        parts.append(_TIMES.pack(0x39, span.start_ns, 0x41, span.end_ns))
        shared = span.shared
        if shared:
            known = self.shared.get(id(shared))
            if known is None or known[0] is not shared:
                if len(self.shared) >= _CACHE_MAX:
                    self.shared.clear()
                known = self.shared[id(shared)] = (shared, _attributes(0x4A, shared))
            parts.append(known[1])
        pairs = self.pairs
        for pair in span.attributes.items():
            try:
                encoded = pairs.get(pair)
            except TypeError:  # an unhashable value (a list): encoded each time
                parts.append(_key_value(0x4A, *pair))
                continue
            if encoded is None:
                if len(pairs) >= _CACHE_MAX:
                    pairs.clear()
                encoded = pairs[pair] = _key_value(0x4A, *pair)
            parts.append(encoded)
        for event_name, at, attributes in span.events:
            event = b"\x09" + struct.pack("<Q", at) + _field(0x12, event_name.encode())
            parts.append(_field(0x5A, event + _attributes(0x1A, attributes)))
        code = _STATUS.get(span.status_code)
        if code is not None:
            message = _field(0x12, span.status_message.encode()) if span.status_message else b""
            parts.append(_field(0x7A, message + b"\x18" + _BYTES[code]))
        parts.append(_FLAGS[span.parent_remote, span.sampled])
        body = b"".join(parts)
        return b"\x12" + _varint(len(body)) + body


def encode_request(resource: Mapping[str, AttributeValue], scope: str) -> tuple[bytes, bytes]:
    """The fixed parts of every request: the `Resource` (field 1 of a `ResourceSpans`) and
    the `InstrumentationScope` (field 1 of a `ScopeSpans`)."""
    return _field(0x0A, _attributes(0x0A, resource)), _field(0x0A, _field(0x0A, scope.encode()))


def batch_body(resource: bytes, scope: bytes, spans: Iterable[bytes]) -> bytes:
    """An `ExportTraceServiceRequest` of one resource and one scope."""
    return _field(0x0A, resource + _field(0x12, scope + b"".join(spans)))


# --- the export


@dataclass(slots=True)
class SpanCounts:
    """Where the finished spans went; each counter has one writer: the loop (ended,
    dropped) or the exporting thread (handed, failed)."""

    ended: int = 0
    dropped: int = 0
    """Spans pushed out of the full queue (the oldest go)."""
    handed: int = 0
    """Spans taken off the queue by the exporting thread."""
    failed: int = 0
    """Spans of batches the collector did not accept (down, refused, timed out)."""


@dataclass(frozen=True, slots=True)
class Destination:
    """Where and how batches are sent (`OTEL_EXPORTER_OTLP_[TRACES_]*`, resolved)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    compression: str = "none"
    certificate: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None


class Sender:
    """POSTs encoded batches over one kept-alive connection (only the exporting thread
    uses it), retrying what the OTLP spec calls retryable within `timeout`."""

    RETRYABLE = frozenset({429, 502, 503, 504})

    def __init__(self, destination: Destination, stopping: threading.Event) -> None:
        self.destination = destination
        self._stopping = stopping
        url = urlsplit(destination.url)
        self._https = url.scheme == "https"
        self._host = url.hostname or "localhost"
        self._port = url.port or (443 if self._https else 80)
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._headers = {
            "Content-Type": "application/x-protobuf",
            "User-Agent": "fanout-gateway",
            **destination.headers,
        }
        if destination.compression in ("gzip", "deflate"):
            self._headers["Content-Encoding"] = destination.compression
        self._tls: ssl.SSLContext | None = None
        if self._https:
            self._tls = ssl.create_default_context(cafile=destination.certificate)
            if destination.client_certificate:
                self._tls.load_cert_chain(destination.client_certificate, destination.client_key)
        self._connection: http.client.HTTPConnection | None = None
        self._failing = False  # warned once per outage, not once per batch

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            timeout = self.destination.timeout
            if self._tls is not None:
                self._connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=self._tls
                )
            else:
                self._connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=timeout
                )
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _post(self, body: bytes) -> int:
        connection = self._connect()
        connection.request("POST", self._path, body, self._headers)
        answer = connection.getresponse()
        answer.read()
        if answer.will_close:
            self.close()
        return answer.status

    def send(self, body: bytes) -> bool:
        """Whether the collector accepted `body` (an encoded request); the first failure of
        an outage is logged, and the recovery."""
        problem = self._send(body)
        if problem is not None and not self._failing:
            log.warning("span export to %s failed: %s", self.destination.url, problem)
        elif problem is None and self._failing:
            log.warning("span export to %s works again", self.destination.url)
        self._failing = problem is not None
        return problem is None

    def _send(self, body: bytes) -> str | None:
        """None when the collector accepted `body`, else what went wrong."""
        if self.destination.compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
        elif self.destination.compression == "deflate":
            body = zlib.compress(body)
        deadline = time.monotonic() + self.destination.timeout
        backoff = 1.0
        while True:
            reused = self._connection is not None
            try:
                status = self._post(body)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused:  # a kept-alive connection the collector had closed: once more
                    continue
                return str(exc) or type(exc).__name__
            if 200 <= status < 300:
                return None
            if status not in self.RETRYABLE or time.monotonic() + backoff > deadline:
                return f"the collector answered {status}"
            if self._stopping.wait(backoff):
                return f"the collector answered {status} (shutting down: no more retries)"
            backoff *= 2


class SpanExport:
    """The bounded queue of ended spans and the thread that exports them."""

    def __init__(
        self,
        sender: Sender,
        resource: Mapping[str, AttributeValue],
        scope: str,
        *,
        max_queue: int,
        batch_size: int,
        schedule_delay: float,
        stopping: threading.Event,
    ) -> None:
        self.counts = SpanCounts()
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.schedule_delay = schedule_delay
        self._sender = sender
        self._resource, self._scope = encode_request(resource, scope)
        self._encoder = SpanEncoder()
        self._queue: deque[RecordedSpan] = deque(maxlen=max_queue)
        self._wake = threading.Event()
        self._stopping = stopping
        self._thread = threading.Thread(target=self._run, name="span-export", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        counts = self.counts
        return (
            f"<SpanExport [{len(self._queue)}/{self.max_queue} queued, "
            f"{counts.dropped} dropped, {counts.failed} failed]>"
        )

    @property
    def queued(self) -> int:
        return len(self._queue)

    def push(self, span: RecordedSpan) -> None:
        """Queue an ended span (on the loop; never blocks)."""
        queue = self._queue
        counts = self.counts
        counts.ended += 1
        if len(queue) >= self.max_queue:
            counts.dropped += 1  # the append pushes the oldest out
        queue.append(span)
        if len(queue) >= self.batch_size and not self._wake.is_set():
            self._wake.set()

    def shutdown(self, timeout: float) -> None:
        """Export what is queued, then stop the thread (blocking: run it off the loop)."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)
        self._sender.close()

    def _run(self) -> None:
        # as the SDK's BatchSpanProcessor: full batches go at once, the rest when the
        # schedule delay is up (a partial batch sent after each full one would double the
        # requests, and each costs this thread a POST while the loop waits for the GIL)
        deadline = time.monotonic() + self.schedule_delay
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left > 0 and len(self._queue) < self.batch_size:
                self._wake.wait(left)
                self._wake.clear()
            if time.monotonic() >= deadline:
                self._export(everything=True)
                deadline = time.monotonic() + self.schedule_delay
            else:
                self._export(everything=False)
        self._export(everything=True)

    def _export(self, *, everything: bool) -> None:
        queue = self._queue
        encode = self._encoder.encode
        while len(queue) >= (1 if everything else self.batch_size):
            batch: list[bytes] = []
            try:
                while len(batch) < self.batch_size:
                    batch.append(encode(queue.popleft()))  # popleft is atomic
            except IndexError:  # the queue is empty
                pass
            if not batch:
                return
            self.counts.handed += len(batch)
            if not self._sender.send(batch_body(self._resource, self._scope, batch)):
                self.counts.failed += len(batch)
