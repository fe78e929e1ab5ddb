"""Accepting new client connections in batches, so a busy event loop still takes them in.

libuv (and so uvloop) accepts one connection per readiness of the listening socket and waits
for the next loop iteration for the next one (libuv/libuv#3696). When each iteration is long
because thousands of connections have work, that is a few accepts per second: measured here
with 10,000 clients ramping up, the gateway stopped at ~4,000 open connections while the
kernel's accept queue stayed full (4,096) and the rest of the clients sat in SYN retries for
up to a minute. asyncio's own loop accepts up to `backlog` connections per readiness instead.

`BatchAccepter` restores that: it watches a duplicate of the listening socket and, each time
it is readable, accepts up to `batch` pending connections and hands each to the loop with
the server's own protocol factory. uvicorn's server keeps its listener (so its start-up log
and shutdown are unchanged); the two simply share the queue. `BatchAcceptServer` is
uvicorn's Server with one accepter per listener, closed before the server closes its
listeners (the duplicate would otherwise keep the port listening).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable

import uvicorn

log = logging.getLogger("gateway.accept")

ACCEPT_BATCH = 256  # per readiness: drains a connection storm fast, yet bounds one iteration
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
RESOURCE_PAUSE_SECONDS = 1.0  # as asyncio does: give in-flight work time to free descriptors


class BatchAccepter:
    """Accepts connections of one listening socket in batches on the running loop."""

    def __init__(
        self,
        listener: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        batch: int = ACCEPT_BATCH,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        # A duplicate: uvloop refuses a reader on a descriptor its server handle owns.
        self._sock = socket.socket(fileno=os.dup(listener.fileno()))
        self._sock.setblocking(False)
        self._factory = protocol_factory
        self._batch = batch
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = False
        self.accepted = 0
        self._loop.add_reader(self._sock.fileno(), self._on_readable)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<BatchAccepter {state} [accepted: {self.accepted}, batch: {self._batch}]>"

    def close(self) -> None:
        """Stop accepting; connections already accepted are unaffected."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def _resume(self) -> None:
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        for _ in range(self._batch):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # drained, or the peer gave up before we got to it
            except OSError as exc:
                if exc.errno not in RESOURCE_ERRORS:
                    raise
                # Out of descriptors: stop watching for a moment instead of spinning on a
                # socket that stays readable; uvloop's own listener keeps shedding meanwhile.
                log.warning(
                    "accept failed (%s); pausing accepts for %gs", exc, RESOURCE_PAUSE_SECONDS
                )
                self._loop.remove_reader(self._sock.fileno())
                self._loop.call_later(RESOURCE_PAUSE_SECONDS, self._resume)
                return
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                # small responses go out at once, as on uvloop's own TCP transports
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.accepted += 1
            task = self._loop.create_task(self._connect(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except OSError as exc:  # the client reset it already: nothing to serve
            log.debug("accepted connection lost before it was set up: %s", exc)
            conn.close()


class BatchAcceptServer(uvicorn.Server):
    """uvicorn's Server, accepting in batches (see the module docstring)."""

    _accepters: list[BatchAccepter] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        config = self.config

        def create_protocol() -> asyncio.Protocol:
            # what uvicorn's own startup builds for its listener
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        self._accepters = [
            BatchAccepter(listener, create_protocol)
            for server in self.servers
            for listener in server.sockets
        ]

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for accepter in self._accepters or ():
            accepter.close()
        await super().shutdown(sockets)
