"""Background calls (`background: true`): after the response, counted, bounded, drained.

Ordering is shown with events, never timings: in process, the response's last byte is
recorded before the background call reaches its backend; over TCP, the client has its answer
while the background call is still held at a gate. A full set drops (and counts) a request's
background calls; a SIGTERM while 20 are pending still delivers all 20.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Message

from gateway.config.loader import parse_spec
from gateway.config.settings import Settings
from gateway.web.app import create_app
from gateway.web.background import shutdown_deadline
from tests.logwatch import LogWatch
from tests.processes import Running, start_gateway
from tests.recorder import Answer, Recorded, Recorder

PENDING_LIMIT = 3  # GATEWAY_BACKGROUND_CALLS of the module's gateway

CONFIG = """
version: 1
backends:
  rec: {{kind: http, url: "{rec}", timeout: 30s}}
endpoints:
  - path: /order
    method: POST
    timeout: 30s
    calls:
      - {{name: order, backend: rec, method: POST, path: /orders, body: forward, required: true}}
      - {{name: optional, backend: rec, path: /status/503, group: optional}}
      - name: audit
        backend: rec
        method: POST
        path: /held-audit
        needs: [order]
        background: true
        body: {{order: "{{calls.order.bytes}}", type: order_created}}
      - {{name: broken, backend: rec, method: POST, path: /status/500, background: true}}
      - {{name: skipped, backend: rec, method: POST, path: /never, needs: [optional], background: true}}
  - path: /track
    method: POST
    timeout: 30s
    calls:
      - name: event
        backend: rec
        method: POST
        path: /held-track
        background: true
        body: {{n: "{{body.n}}"}}
"""


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    recorder.rules["/status/503"] = lambda r: Answer.of(503, {"error": "busy"})
    recorder.rules["/status/500"] = lambda r: Answer.of(500, {"error": "broken"})
    with recorder.serving():
        yield recorder


@pytest.fixture(scope="module")
def gateway(recorder: Recorder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    path = tmp_path_factory.mktemp("background") / "gateway.yaml"
    path.write_text(CONFIG.format(rec=recorder.url))
    running = start_gateway(path, env={"GATEWAY_BACKGROUND_CALLS": str(PENDING_LIMIT)})
    yield running
    assert running.stop() == 0


def background_counts(client: httpx.Client) -> dict[tuple[str, str], float]:
    """gateway_background_calls_total by (call, outcome)."""
    pattern = (
        r'^gateway_background_calls_total\{call="(\w+)",endpoint="[^"]+",outcome="(\w+)"\} (\S+)$'
    )
    text = client.get("/metrics").text
    return {(c, o): float(v) for c, o, v in re.findall(pattern, text, re.MULTILINE)}


def until_counted(client: httpx.Client, expected: dict[tuple[str, str], float]) -> None:
    """Scrape until the counters reach `expected`; each scrape is a round trip (no spin)."""
    for _ in range(2000):
        counts = background_counts(client)
        if all(counts.get(key, 0) >= value for key, value in expected.items()):
            assert all(counts.get(key, 0) == value for key, value in expected.items()), counts
            return
    raise AssertionError(f"never counted {expected}: {background_counts(client)}")


def until_pending(client: httpx.Client, expected: int) -> None:
    """Scrape until `expected` background calls are pending (each scrape a round trip)."""
    line = f"gateway_background_calls_pending {float(expected)}"
    for _ in range(2000):
        if line in client.get("/metrics").text:
            return
    raise AssertionError(f"never {expected} pending: {client.get('/metrics').text}")


def test_the_answer_does_not_wait_for_background_calls_and_each_is_counted(
    gateway: Running, recorder: Recorder
) -> None:
    gate = recorder.gates["/held-audit"] = threading.Event()
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        before = background_counts(client)
        audits = len(recorder.to("/held-audit"))
        response = client.post("/order", json={"total": 3})
        # the answer is here while the audit call cannot have finished: it waits at the gate
        assert response.status_code == 200, response.text
        assert response.headers["x-gateway-complete"] == "false"  # `optional` failed
        assert set(response.json()) == {"method", "path", "bytes", "content_type"}
        (audit,) = recorder.wait_for("/held-audit", audits + 1)[audits:]
        assert audit.json() == {"order": len(b'{"total":3}'), "type": "order_created"}
        assert not gate.is_set()
        gate.set()
        until_counted(
            client,
            {
                ("audit", "ok"): before.get(("audit", "ok"), 0) + 1,
                ("broken", "failed"): before.get(("broken", "failed"), 0) + 1,
                ("skipped", "failed"): before.get(("skipped", "failed"), 0) + 1,
            },
        )
    assert recorder.to("/never") == []


def test_beyond_the_bound_background_calls_are_dropped_and_counted(
    gateway: Running, recorder: Recorder
) -> None:
    gate = recorder.gates["/held-track"] = threading.Event()
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        before = background_counts(client)
        seen = len(recorder.to("/held-track"))
        for n in range(PENDING_LIMIT):
            assert client.post("/track", json={"n": n}).status_code == 200
        recorder.wait_for("/held-track", seen + PENDING_LIMIT)  # all held: the set is full
        assert client.post("/track", json={"n": 99}).status_code == 200  # still answered
        until_counted(client, {("event", "dropped"): before.get(("event", "dropped"), 0) + 1})
        gate.set()
        until_counted(client, {("event", "ok"): before.get(("event", "ok"), 0) + PENDING_LIMIT})
    assert [r.json()["n"] for r in recorder.to("/held-track")[seen:]] == list(range(PENDING_LIMIT))


# --- in process: the order of events ---------------------------------------------------------


async def test_background_calls_start_only_after_the_last_byte_was_sent(
    recorder: Recorder,
) -> None:
    events: list[str] = []
    loop = asyncio.get_running_loop()
    arrived = asyncio.Event()

    def later(request: Recorded) -> Answer:
        events.append("background call arrived")
        loop.call_soon_threadsafe(arrived.set)
        return Answer()

    def ping(request: Recorded) -> Answer:
        events.append("ping")
        return Answer()

    recorder.rules["/ping"] = ping
    recorder.rules["/later"] = later
    spec = parse_spec(
        f"""
version: 1
backends: {{rec: {{kind: http, url: "{recorder.url}"}}}}
endpoints:
  - path: /write
    method: POST
    calls:
      - {{name: now, backend: rec, method: POST, path: /now, body: forward}}
      - {{name: later, backend: rec, method: POST, path: /later, background: true}}
""",
        "inline.yaml",
    )
    app = create_app(spec, Settings())
    body = b'{"a": 1}'
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/write",
        "raw_path": b"/write",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"8")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200
            # a real round trip while the answer is on its way: a background call started
            # before the answer was sent would reach the backend first
            async with httpx.AsyncClient() as client:
                await client.get(f"{recorder.url}/ping")
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            events.append("response sent")

    async with app.router.lifespan_context(app):
        await app(scope, receive, send)
        await asyncio.wait_for(arrived.wait(), timeout=30)
    assert events == ["ping", "response sent", "background call arrived"]


@pytest.mark.parametrize(
    ("loop_now", "monotonic_now", "since", "expected"),
    [
        (100.0, 50.0, None, 120.0),  # no signal (tests): the graceful timeout from now
        (100.0, 50.0, 44.0, 119.0),  # signalled 6 s ago: 5 s drain + 20 s grace, 19 s left
        (100.0, 50.0, 10.0, 100.0),  # the budget is spent: nothing more
    ],
)
def test_the_shutdown_deadline_ends_with_the_graceful_timeout(
    loop_now: float, monotonic_now: float, since: float | None, expected: float
) -> None:
    assert shutdown_deadline(loop_now, monotonic_now, since, 5.0, 20.0) == expected


# --- SIGTERM with 20 background calls pending -------------------------------------------------

DRAIN_CONFIG = """
version: 1
backends:
  events: {{kind: http, url: "{rec}", timeout: 30s, max_connections: 1}}
endpoints:
  - path: /track
    method: POST
    timeout: 30s
    calls:
      - {{name: event, backend: events, method: POST, path: /drain-events, background: true, body: forward}}
"""


def test_sigterm_with_20_background_calls_pending_delivers_all_20(
    recorder: Recorder, tmp_path: Path
) -> None:
    gate = recorder.gates["/drain-events"] = threading.Event()
    config = tmp_path / "gateway.yaml"
    config.write_text(DRAIN_CONFIG.format(rec=recorder.url))
    env = {"GATEWAY_DRAIN_SECONDS": "0.5", "GATEWAY_GRACEFUL_TIMEOUT_SECONDS": "20"}
    gateway = start_gateway(config, env, stderr=subprocess.PIPE)
    log = LogWatch(gateway.process)
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            for n in range(20):
                assert client.post("/track", json={"n": n}).status_code == 200
            # one call holds the backend's only connection at the gate; 19 wait for it
            recorder.wait_for("/drain-events", 1)
            until_pending(client, 20)
        gateway.process.send_signal(signal.SIGTERM)
        log.wait_for("waiting for 20 background calls to finish", timeout=30)
        assert gateway.process.poll() is None
        gate.set()
        delivered = recorder.wait_for("/drain-events", 20)
        assert sorted(r.json()["n"] for r in delivered) == list(range(20))
        assert gateway.process.wait(timeout=30) == 0
        log.wait_for("background calls finished", timeout=5)
        assert not [line for line in log.lines if "cancelled" in line or "dropped" in line]
    finally:
        gateway.stop()
        log.close()
