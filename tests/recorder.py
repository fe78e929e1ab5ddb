"""A recording HTTP backend in the test process: it keeps every request it receives (method,
path, headers, the body's exact bytes) and answers by rules the test sets per path.

A real server on 127.0.0.1 (an ephemeral port), not a mock: the gateway reaches it over TCP
as it would any backend. Tests wait on `wait_for` (a condition notified on every request),
never on sleeps; a path can be held at a gate until the test opens it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from tests.threaded_http import BackloggedServer


@dataclass(frozen=True)
class Recorded:
    """One request as the backend received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; repeated ones joined with ", "
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    """What the backend answers: a status, a body and its Content-Type."""

    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"

    @classmethod
    def of(cls, status: int, value: Any, content_type: str = "application/json") -> Answer:
        return cls(status, json.dumps(value).encode(), content_type)


Rule = Callable[[Recorded], Answer]


def echo(request: Recorded) -> Answer:
    """The default answer: what arrived, as JSON."""
    return Answer.of(
        200,
        {
            "method": request.method,
            "path": request.path,
            "bytes": len(request.body),
            "content_type": request.headers.get("content-type"),
        },
    )


@dataclass
class Recorder:
    """The backend; `requests` in arrival order."""

    requests: list[Recorded] = field(default_factory=list)
    rules: dict[str, Rule] = field(default_factory=dict)
    gates: dict[str, threading.Event] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real backends
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms wait

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers: dict[str, str] = {}
                for name, value in self.headers.items():
                    key = name.lower()
                    headers[key] = f"{headers[key]}, {value}" if key in headers else value
                url = urlsplit(self.path)
                request = Recorded(self.command, url.path, url.query, headers, body)
                with recorder.changed:
                    recorder.requests.append(request)
                    recorder.changed.notify_all()
                gate = recorder.gates.get(url.path)
                if gate is not None:
                    gate.wait(60)
                answer = recorder.rules.get(url.path, echo)(request)
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815 (http.server's names)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = BackloggedServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextmanager
    def serving(self) -> Iterator[Recorder]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            for gate in self.gates.values():
                gate.set()
            self.server.shutdown()
            self.server.server_close()
            thread.join(timeout=10)

    def to(self, path: str) -> list[Recorded]:
        """The requests received on `path` so far."""
        with self.changed:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 30) -> list[Recorded]:
        """Wait until `count` requests reached `path`; they are returned."""
        with self.changed:
            arrived = self.changed.wait_for(lambda: len(self.to(path)) >= count, timeout)
            assert arrived, f"{len(self.to(path))} of {count} requests reached {path}"
            return self.to(path)
