"""A small HTTP backend for observability tests that records what it was sent.

`/flaky/<key>` answers 503 the first time a key is asked and 200 afterwards (a retried
call); `/fail` always answers 503; anything else answers 200 with `{"path": ..., "next":
"n1"}`. Every request's path and headers are kept, in order.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.threaded_http import BackloggedServer


class RecordingBackend:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.failing = False
        self._flaky: set[str] = set()
        self._lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms ACK wait

            def do_GET(self) -> None:
                with backend._lock:
                    backend.seen.append(
                        (self.path, {k.lower(): v for k, v in self.headers.items()})
                    )
                    status = 200
                    if self.path == "/fail" or backend.failing:
                        status = 503
                    elif self.path.startswith("/flaky/") and self.path not in backend._flaky:
                        backend._flaky.add(self.path)
                        status = 503
                body = json.dumps({"path": self.path, "next": "n1"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = BackloggedServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
