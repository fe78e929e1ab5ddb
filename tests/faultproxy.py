"""A fault-injecting TCP proxy on 127.0.0.1, between the gateway and one backend (tests only).

It runs on the test's own event loop and counts what crosses it, so a test can say how many
requests really reached the backend. Modes (switchable at any time, per request):

* ``pass``: forward both ways.
* ``latency``: hold every ``slow_every``-th request for ``latency`` seconds before forwarding
  it (1 = every request), i.e. a backend with a slow tail.
* ``reset``: answer with a TCP reset (new connections at once, open ones at their next request).
* ``blackhole``: accept and read, never forward and never answer.

Independently of the mode, `hold()` keeps every request (counted, not forwarded) until
`release()`: a test can then see exactly what reached the proxy while requests are in flight.

Requests are counted by their head's blank line, which is exact for the body-less GETs the
gateway's aggregation calls send (aiohttp does not pipeline, so one head is one request).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from typing import Literal

Mode = Literal["pass", "latency", "reset", "blackhole"]
HEAD_END = b"\r\n\r\n"


class FaultProxy:
    """Listen on an ephemeral port of 127.0.0.1 and forward to `upstream_port`."""

    def __init__(self, upstream_port: int, mode: Mode = "pass") -> None:
        self.upstream_port = upstream_port
        self.mode: Mode = mode
        self.latency = 0.0
        self.slow_every = 1
        self.requests = 0  # request heads seen, whatever the mode
        self.connections = 0
        self.gate = asyncio.Event()  # set: forward; cleared by hold(), set again by release()
        self.gate.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def __repr__(self) -> str:
        return (
            f"<FaultProxy :{self.port} -> :{self.upstream_port} [{self.mode}, "
            f"{self.requests} requests, {len(self._writers)} sockets open]>"
        )

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hold(self) -> None:
        """Keep requests from now on until `release()` (they are still counted)."""
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in list(self._writers):
            writer.transport.abort()
        # let the aborted transports run their connection_lost callbacks before the loop ends
        await asyncio.sleep(0)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(client_w)
        upstream_w: asyncio.StreamWriter | None = None
        try:
            if self.mode == "reset":
                _reset(client_w)
                return
            if self.mode != "blackhole":
                try:
                    upstream_r, upstream_w = await asyncio.open_connection(
                        "127.0.0.1", self.upstream_port
                    )
                except OSError:
                    _reset(client_w)  # the backend is down: the client sees it at once
                    return
                self._writers.add(upstream_w)
                back = asyncio.ensure_future(_pipe(upstream_r, client_w))
            else:
                back = None
            await self._forward_requests(client_r, client_w, upstream_w)
            if back is not None:
                back.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await back
        finally:
            for writer in (client_w, upstream_w):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.transport.abort()

    async def _forward_requests(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        upstream_w: asyncio.StreamWriter | None,
    ) -> None:
        tail = b""
        with contextlib.suppress(ConnectionError):
            while data := await client_r.read(65536):
                heads = (tail + data).count(HEAD_END)
                tail = (tail + data)[-3:]
                self.requests += heads
                if self.mode == "reset":
                    _reset(client_w)
                    return
                if self.mode == "blackhole" or upstream_w is None:
                    continue  # swallow it: the client waits for an answer that never comes
                # decided on arrival: other connections may count requests while this one waits
                slow = self.mode == "latency" and heads and self.requests % self.slow_every == 0
                await self.gate.wait()
                if slow:
                    await asyncio.sleep(self.latency)
                upstream_w.write(data)
                await upstream_w.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN: SO_LINGER on, timeout 0."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextlib.asynccontextmanager
async def fault_proxy(upstream_port: int, mode: Mode = "pass") -> AsyncIterator[FaultProxy]:
    """A started proxy, closed (every socket aborted) on exit."""
    proxy = await FaultProxy(upstream_port, mode).start()
    try:
        yield proxy
    finally:
        await proxy.close()
