"""A small TCP load balancer for drain tests, standing in for a Kubernetes Service + kube-proxy.

It health-checks each backend's /readyz every `interval` seconds and sends each *new*
connection to the next healthy backend, round-robin; existing connections are left alone,
as kube-proxy does when an endpoint is removed. It runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Backend:
    port: int
    healthy: bool = False
    unhealthy_since: float | None = None  # monotonic time it was first seen not ready


@dataclass
class LoadBalancer:
    backends: list[Backend]
    interval: float = 0.1
    port: int = 0
    all_healthy: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _started: threading.Event = field(default_factory=threading.Event)

    @contextlib.contextmanager
    def running(self) -> Iterator[LoadBalancer]:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._started.wait(timeout=10)
        try:
            yield self
        finally:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._loop.create_task(self._health_checks())
        self._started.set()
        self._loop.run_forever()
        server.close()
        # Cancel every connection and health check and wait until each has closed its
        # sockets: a StreamWriter left for the garbage collector warns (ResourceWarning).
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.run_until_complete(asyncio.sleep(0))  # transports finish closing
        self._loop.close()

    async def _health_checks(self) -> None:
        while True:
            for backend in self.backends:
                ready = await _ready(backend.port)
                if not ready and backend.healthy:
                    backend.unhealthy_since = time.monotonic()
                backend.healthy = ready
            if all(b.healthy for b in self.backends):
                self.all_healthy.set()
            await asyncio.sleep(self.interval)  # the probe period, as a kubelet's periodSeconds

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            healthy = [b for b in self.backends if b.healthy]
            if not healthy:
                return
            backend = healthy[next(_counter) % len(healthy)]
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend.port)
            except OSError:
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            writer.close()


_counter = itertools.count()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _ready(port: int) -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        status_line = await asyncio.wait_for(reader.readline(), 1)
        return status_line.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
