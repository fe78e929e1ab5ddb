"""``python -m services.inventory``: the WSGI app on a thread-per-request stdlib server."""

from __future__ import annotations

import argparse
import signal
import socket
from collections.abc import Sequence
from socketserver import ThreadingMixIn
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from services.faults import parse_duration
from services.inventory.app import Inventory


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request, as old synchronous servers do; gated threads never block exit."""

    daemon_threads = True
    request_queue_size = 1024  # listen backlog when this process binds the socket itself


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would dominate a load test's output


def build_server(host: str, port: int, fd: int | None) -> ThreadingWSGIServer:
    """A server on `host:port`, or on the already-listening socket `fd` (tests bind port 0)."""
    if fd is None:
        return ThreadingWSGIServer((host, port), QuietHandler)
    sock = socket.socket(fileno=fd)
    server = ThreadingWSGIServer(sock.getsockname(), QuietHandler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    # what HTTPServer.server_bind would have set
    server.server_name, server.server_port = sock.getsockname()[:2]
    server.setup_environ()
    return server


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.inventory", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8103)
    parser.add_argument("--fd", type=int, default=None, help="serve on an already-bound socket")
    parser.add_argument("--latency", default="50ms", help="added to every stock answer")
    args = parser.parse_args(argv)
    server = build_server(args.host, args.port, args.fd)
    server.set_app(Inventory(latency=parse_duration(args.latency)))

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
