"""An upstream that dies in the middle of its answer (killed, reset, a crashing proxy): the
call fails like any unreachable upstream; the client never sees a 500."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.processes import Running, start_gateway

DECLARED = 1000  # the Content-Length promised
SENT = b'{"id": 1, "na'  # what is sent before the connection closes


class BreaksOff(socketserver.StreamRequestHandler):
    """Answers 200 with a Content-Length, sends part of the body, and closes."""

    def handle(self) -> None:
        while self.rfile.readline() not in (b"\r\n", b""):
            pass  # the request head; the gateway's calls have no body
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {DECLARED}\r\n\r\n".encode()
            + SENT
        )
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="module")
def breaking_upstream() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), BreaksOff)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}"}}
  broken: {{kind: http, url: "{broken}"}}
endpoints:
  - path: /page
    error_details: true
    calls:
      - {{name: product, backend: catalog, path: /products/1, required: true, group: product}}
      - {{name: extra, backend: broken, path: /anything, group: extra}}
  - path: /required
    calls:
      - {{name: extra, backend: broken, path: /anything, required: true}}
  - path: /pass/{{rest:path}}
    proxy: {{backend: broken, path: "/{{rest}}"}}
"""


@pytest.fixture(scope="module")
def gateway(
    catalog: Running, breaking_upstream: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    config = tmp_path_factory.mktemp("broken") / "gateway.yaml"
    config.write_text(CONFIG.format(catalog=catalog.url, broken=breaking_upstream))
    running = start_gateway(config, env={"GATEWAY_DRAIN_SECONDS": "0"})
    with httpx.Client(base_url=running.url, timeout=30) as client:
        yield client
    assert running.stop() == 0


def test_a_broken_off_optional_call_leaves_a_partial_answer(gateway: httpx.Client) -> None:
    response = gateway.get("/page")
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-complete"] == "false"
    body = response.json()
    assert body["product"]["id"] == 1 and "extra" not in body
    assert "extra" in body["_errors"]


def test_a_broken_off_required_call_is_a_502_problem(gateway: httpx.Client) -> None:
    response = gateway.get("/required")
    assert response.status_code == 502, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "extra" in response.json()["failed_calls"]


def test_a_broken_off_passthrough_body_is_a_502_problem(gateway: httpx.Client) -> None:
    response = gateway.get("/pass/anything")
    assert response.status_code == 502, response.text
    assert response.headers["content-type"] == "application/problem+json"
