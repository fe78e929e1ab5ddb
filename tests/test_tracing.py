"""Traces for real: a gateway process exporting OTLP/HTTP to a receiver in this test, a
backend that records the `traceparent` it was sent, and a collector that is down."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.otlp_receiver import OtlpReceiver
from tests.processes import Running, start_gateway
from tests.recording_backend import RecordingBackend

SERVER, CLIENT = 2, 3  # OTLP Span.SpanKind values
ERROR = 2  # OTLP Status.StatusCode.STATUS_CODE_ERROR

CONFIG = """
version: 1
backends:
  svc:
    kind: http
    url: {url}
    retry: {{attempts: 3, backoff: 10ms, max_backoff: 20ms}}
endpoints:
  - path: /page/{{id}}
    calls:
      - {{name: first, backend: svc, path: "/a/{{id}}", group: first}}
      - {{name: second, backend: svc, path: "/b/{{calls.first.next}}", needs: [first], group: second}}
      - {{name: flaky, backend: svc, path: "/flaky/{{id}}", group: flaky}}
"""

TRACE_ENV = {
    "OTEL_BSP_SCHEDULE_DELAY": "50",
    "OTEL_TRACES_SAMPLER": "always_on",
    "GATEWAY_DRAIN_SECONDS": "0",
}


def parent_of(traceparent: str) -> str:
    """`00-<trace id>-<span id>` of a traceparent, checked to say "sampled"."""
    version, trace_id, span_id, flags = traceparent.split("-")
    assert int(flags, 16) & 1, traceparent  # sampled (the SDK may add the random-id flag)
    return f"{version}-{trace_id}-{span_id}"


@pytest.fixture
def backend() -> Iterator[RecordingBackend]:
    recording = RecordingBackend()
    yield recording
    recording.close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    otlp = OtlpReceiver()
    yield otlp
    otlp.close()


def traced_gateway(tmp_path: Path, backend: RecordingBackend, endpoint: str, **env: str) -> Running:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(url=backend.url))
    return start_gateway(config, env={**TRACE_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, **env})


def test_one_request_is_one_trace_with_a_span_per_try(
    tmp_path: Path, backend: RecordingBackend, receiver: OtlpReceiver
) -> None:
    gateway = traced_gateway(tmp_path, backend, receiver.endpoint)
    try:
        answer = httpx.get(f"{gateway.url}/page/7", timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-gateway-complete"] == "true"
        request_id = answer.headers["x-request-id"]
        spans = receiver.wait_for(5)
    finally:
        assert gateway.stop() == 0

    servers = [s for s in spans if s.kind == SERVER]
    assert [s.name for s in servers] == ["GET /page/{id}"]
    root = servers[0]
    assert root.parent_span_id == ""
    assert root.attributes["http.route"] == "/page/{id}"
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["gateway.request_id"] == request_id

    tries = sorted(
        (s for s in spans if s.kind == CLIENT),
        key=lambda s: (s.name, s.attributes["gateway.attempt"]),
    )
    assert [(s.name, s.attributes["gateway.attempt"]) for s in tries] == [
        ("call first", 1),
        ("call flaky", 1),
        ("call flaky", 2),
        ("call second", 1),
    ]
    assert {s.trace_id for s in spans} == {root.trace_id}
    assert {s.parent_span_id for s in tries} == {root.span_id}
    first, flaky_failed, flaky_ok, second = tries
    assert first.attributes["gateway.backend"] == "svc"
    assert first.attributes["gateway.backend.kind"] == "http"
    assert first.attributes["url.template"] == "/a/{id}"
    assert first.attributes["gateway.call.status"] == 200
    assert flaky_failed.status_code == ERROR
    assert flaky_failed.attributes["gateway.call.status"] == 503
    assert flaky_failed.attributes["error.type"] == "BadStatus"
    assert flaky_ok.status_code != ERROR
    assert second.attributes["url.template"] == "/b/{calls.first.next}"

    # the backend saw each try's own span as the parent of its request
    sent = {
        path: headers["traceparent"] for path, headers in backend.seen if "traceparent" in headers
    }
    assert len(sent) == 3 and len(backend.seen) == 4  # /flaky/7 twice: the dict keeps the last
    assert parent_of(sent["/a/7"]) == f"00-{root.trace_id}-{first.span_id}"
    assert parent_of(sent["/b/n1"]) == f"00-{root.trace_id}-{second.span_id}"
    flaky_parents = [parent_of(h["traceparent"]) for p, h in backend.seen if p == "/flaky/7"]
    assert flaky_parents == [
        f"00-{root.trace_id}-{flaky_failed.span_id}",
        f"00-{root.trace_id}-{flaky_ok.span_id}",
    ]


def test_an_incoming_traceparent_is_continued(
    tmp_path: Path, backend: RecordingBackend, receiver: OtlpReceiver
) -> None:
    gateway = traced_gateway(tmp_path, backend, receiver.endpoint)
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    try:
        answer = httpx.get(
            f"{gateway.url}/page/8",
            headers={"traceparent": f"00-{trace_id}-{parent}-01", "tracestate": "vendor=x"},
            timeout=30,
        )
        assert answer.status_code == 200
        spans = receiver.wait_for(5)
    finally:
        assert gateway.stop() == 0
    root = next(s for s in spans if s.kind == SERVER)
    assert root.trace_id == trace_id
    assert root.parent_span_id == parent
    assert {s.trace_id for s in spans} == {trace_id}
    assert all(h["traceparent"].startswith(f"00-{trace_id}-") for _, h in backend.seen)


def test_a_refused_call_is_an_event_of_the_request_span(
    tmp_path: Path, backend: RecordingBackend, receiver: OtlpReceiver
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""
version: 1
backends:
  svc: {{kind: http, url: "{backend.url}", breaker: {{failures: 1, cooldown: 60s}}}}
endpoints:
  - path: /fail
    calls: [{{name: broken, backend: svc, path: /fail}}]
""")
    gateway = start_gateway(
        config, env={**TRACE_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
    )
    try:
        statuses = [httpx.get(f"{gateway.url}/fail", timeout=30).status_code for _ in range(2)]
        assert statuses == [502, 503]  # the first opens the circuit; the second is refused
        spans = receiver.wait_for(3)  # two server spans, one try
    finally:
        assert gateway.stop() == 0
    servers = [s for s in spans if s.kind == SERVER]
    assert sorted(s.attributes["http.response.status_code"] for s in servers) == [502, 503]
    refused = next(s for s in servers if s.attributes["http.response.status_code"] == 503)
    assert refused.events == ("call refused",)
    assert [s.name for s in spans if s.kind == CLIENT] == ["call broken"]


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def test_a_collector_that_is_down_costs_bounded_memory_and_no_request(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    with socket.socket() as probe:  # a port nobody listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    gateway = traced_gateway(
        tmp_path,
        backend,
        dead,
        OTEL_BSP_MAX_QUEUE_SIZE="64",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="32",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
    )
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            assert client.get("/page/1").status_code == 200
            rss_before = psutil.Process(gateway.process.pid).memory_info().rss
            statuses = [client.get(f"/page/{i}").status_code for i in range(400)]
            rss_after = psutil.Process(gateway.process.pid).memory_info().rss
            text = client.get("/metrics").text
    finally:
        assert gateway.stop(grace=20) == 0
    assert statuses == [200] * 400
    ended = metric(text, "gateway_trace_spans_ended_total")
    # a server span and three first tries per request (the last server span may end just
    # after its answer was read); the retry budget lets only a share of the flaky calls retry
    assert ended >= 400 * 4
    queued = metric(text, "gateway_trace_export_queue_spans")
    assert queued <= 64
    lost = metric(text, 'gateway_trace_spans_dropped_total{reason="queue_full"}') + metric(
        text, 'gateway_trace_spans_dropped_total{reason="export_failed"}'
    )
    assert lost >= ended - 64 - 32  # all but what is queued or in the batch being tried
    assert rss_after - rss_before < 30 * 2**20, (rss_before, rss_after)


def test_sql_and_legacy_calls_carry_their_statement_and_queue_wait(
    tmp_path: Path, receiver: OtlpReceiver, database_url: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("""
version: 1
backends:
  db: {kind: postgres, dsn: "${DATABASE_URL}", pool: {min: 1, max: 2}}
  old: {kind: legacy, target: "tests.executor_targets:whoami", threads: 2}
endpoints:
  - path: /users/{id}
    calls:
      - {name: user, backend: db, sql: "SELECT id, name FROM users WHERE id = $1", params: ["{id:int}"], result: one}
      - {name: who, backend: old, group: who}
  - path: /query
    calls:
      - {name: text, backend: db, sql: "SELECT current_query() AS q", result: one}
""")
    gateway = start_gateway(
        config,
        env={
            **TRACE_ENV,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "DATABASE_URL": database_url,
            "GATEWAY_SQL_COMMENTER": "1",
        },
    )
    try:
        answer = httpx.get(f"{gateway.url}/users/4242", timeout=30)
        assert answer.status_code == 200, answer.text
        seen_by_database = httpx.get(f"{gateway.url}/query", timeout=30).json()["q"]
        spans = receiver.wait_for(5)
    finally:
        assert gateway.stop() == 0
    sql = next(s for s in spans if s.name == "call user")
    assert sql.attributes["db.system.name"] == "postgresql"
    assert sql.attributes["db.operation.name"] == "SELECT"
    assert sql.attributes["db.query.text"] == "SELECT id, name FROM users WHERE id = $1"
    assert not any("4242" in str(v) for v in sql.attributes.values())  # no parameter values
    # sqlcommenter: the database saw the statement with the traceparent of its try
    text = next(s for s in spans if s.name == "call text")
    comment = re.fullmatch(
        r"SELECT current_query\(\) AS q /\*traceparent='(.+)'\*/", seen_by_database
    )
    assert comment, seen_by_database
    assert parent_of(comment.group(1)) == f"00-{text.trace_id}-{text.span_id}"
    legacy = next(s for s in spans if s.name == "call who")
    assert legacy.attributes["gateway.backend.kind"] == "legacy"
    assert 0 <= legacy.attributes["gateway.pool.queue_wait_ms"] < 10_000


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"OTEL_BSP_MAX_QUEUE_SIZE": "10"},  # below the SDK's default batch of 512
            "environment: OTEL_BSP_*: max_export_batch_size must be less than or equal to "
            "max_queue_size.",
        ),
        (
            {"OTEL_BSP_MAX_QUEUE_SIZE": "0"},
            "environment: OTEL_BSP_MAX_QUEUE_SIZE: Input should be greater than or equal to 1",
        ),
        (
            {"GATEWAY_LOG_FORMAT": "xml"},
            "environment: GATEWAY_LOG_FORMAT: Input should be 'json' or 'text'",
        ),
    ],
)
def test_a_bad_observability_setting_is_one_line(
    tmp_path: Path, env: dict[str, str], line: str
) -> None:
    config = tmp_path / "g.yaml"
    config.write_text(CONFIG.format(url="http://127.0.0.1:1"))
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(config), "--port", "0"],
        env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [line]
