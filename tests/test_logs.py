"""Structured logs and the access log, read from a real gateway process's stderr/stdout."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.observability.access_log import AccessLog
from gateway.observability.logging import JsonFormatter, RequestContextFilter
from gateway.web.request_id import current_request_id
from tests.processes import start_gateway
from tests.recording_backend import RecordingBackend

CONFIG = """
version: 1
backends:
  svc: {{kind: http, url: "{url}", breaker: {{failures: 1, cooldown: 60s}}}}
  other: {{kind: http, url: "{url}"}}
endpoints:
  - path: /partial/{{id}}
    calls:
      - {{name: fine, backend: other, path: "/a/{{id}}", group: fine}}
      - {{name: broken, backend: svc, path: /fail, group: broken}}
"""


@pytest.fixture
def backend() -> Iterator[RecordingBackend]:
    recording = RecordingBackend()
    yield recording
    recording.close()


def test_json_log_lines_parse_and_carry_the_request_id(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(url=backend.url))
    log_path = tmp_path / "stderr.log"
    with log_path.open("wb") as stderr:
        gateway = start_gateway(
            config,
            env={"GATEWAY_LOG_FORMAT": "json", "GATEWAY_DRAIN_SECONDS": "0"},
            stderr=stderr,
        )
        try:
            answer = httpx.get(
                f"{gateway.url}/partial/1", headers={"X-Request-ID": "req-42"}, timeout=30
            )
            assert answer.status_code == 200
        finally:
            assert gateway.stop() == 0
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(lines) >= 4  # start-up, the breaker, shutdown
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= line.keys(), line
        assert line["ts"].endswith("Z")
    breaker = [line for line in lines if "breaker svc" in line["message"]]
    assert len(breaker) == 1, lines
    assert breaker[0]["level"] == "warning"
    assert breaker[0]["logger"] == "gateway.policies"
    assert breaker[0]["request_id"] == "req-42"
    started = [line for line in lines if "Application startup complete" in line["message"]]
    assert started and "request_id" not in started[0]


def test_the_access_log_line_of_a_partial_answer_lists_its_failed_calls(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(url=backend.url))
    out_path = tmp_path / "stdout.log"
    with out_path.open("wb") as stdout:
        gateway = start_gateway(
            config, env={"GATEWAY_ACCESS_LOG": "1", "GATEWAY_DRAIN_SECONDS": "0"}, stdout=stdout
        )
        try:
            with httpx.Client(base_url=gateway.url, timeout=30) as client:
                partial = client.get("/partial/1")
                missing = client.get("/nowhere")
                client.get("/livez")  # probes are not traffic: no line
        finally:
            assert gateway.stop() == 0
    assert partial.headers["x-gateway-complete"] == "false"
    lines = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert [line["status"] for line in lines] == [200, 404]
    first, second = lines
    assert first["route"] == "/partial/{id}"
    assert first["path"] == "/partial/1"
    assert first["method"] == "GET"
    assert first["complete"] is False
    assert first["failed_calls"] == ["broken"]
    assert first["request_id"] == partial.headers["x-request-id"]
    assert first["bytes"] == len(partial.content)
    assert first["client_ip"] == "127.0.0.1"
    assert first["duration_ms"] > 0
    assert second["route"] is None
    assert second["request_id"] == missing.headers["x-request-id"]
    assert second["complete"] is False and second["failed_calls"] == []


@pytest.mark.parametrize(
    ("request_id", "expected"),
    [("abc", {"request_id": "abc"}), ("-", {})],
)
def test_the_json_formatter_adds_the_request_id_only_inside_a_request(
    request_id: str, expected: dict[str, str]
) -> None:
    record = logging.LogRecord("gateway.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    token = current_request_id.set(request_id)
    try:
        RequestContextFilter().filter(record)
    finally:
        current_request_id.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line == {
        "ts": line["ts"],
        "level": "info",
        "logger": "gateway.x",
        "message": "hello you",
        **expected,
    }


class StuckStream(io.RawIOBase):
    """A stdout whose reader stopped reading: `write` blocks until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.entered.set()
        self.release.wait(timeout=30)
        self.data += data
        return len(data)


def test_a_stuck_stdout_costs_at_most_the_buffer_and_drops_are_counted() -> None:
    stream = StuckStream()
    log = AccessLog(capacity=100, stream=stream)  # type: ignore[arg-type]
    try:
        log.write({"n": 0})
        assert stream.entered.wait(timeout=10)  # the writer is stuck inside write()
        for n in range(1, 1001):
            log.write({"n": n, "pad": "x" * 100})  # never blocks the caller
        assert log.dropped == 900  # 100 buffered, the rest refused
    finally:
        stream.release.set()
        log.close()
    lines = [json.loads(line) for line in bytes(stream.data).splitlines()]
    assert [line["n"] for line in lines] == list(range(101))
    assert log.written == 101
