"""A small HTTP backend for tests: a `ThreadingHTTPServer` on an ephemeral 127.0.0.1 port,
served from a daemon thread, with a handler base that answers JSON and logs nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    """A keep-alive handler with `send_json`; quiet (the tests read what they assert)."""

    protocol_version = "HTTP/1.1"

    def send_json(self, value: object, status: int = 200, headers: Mapping[str, str] = {}) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, header in headers.items():
            self.send_header(name, header)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class BackloggedServer(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a gateway opening 32 pooled connections at
    # once overflows it, the kernel drops SYNs, and the retransmit (1 s, then 3 s) outlasts
    # the default 2 s call timeout -- a 504 that is the test backend's fault, not the gateway's.
    request_queue_size = 1024


class ThreadedHttp:
    """`handler` served on 127.0.0.1 until `close`; its address is `url`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = BackloggedServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
