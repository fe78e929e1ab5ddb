"""Counting open client connections, which ASGI cannot see: a uvicorn protocol that counts.

One event loop serves one process, so a per-process counter is exact; each uvicorn worker is
its own process with its own counter.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(slots=True)
class ConnectionCounter:
    """Open connections now, and the most seen at once since start."""

    open: int = 0
    peak: int = 0

    def opened(self) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)

    def closed(self) -> None:
        self.open -= 1


CLIENT_CONNECTIONS = ConnectionCounter()


class CountingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus connection counting for /metrics."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        CLIENT_CONNECTIONS.opened()
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        CLIENT_CONNECTIONS.closed()
        super().connection_lost(exc)
