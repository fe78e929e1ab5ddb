"""What an open backend gives the app (`LiveBackend`), and what a kind may use while opening
(`OpenContext`): the two values every kind module and the registry share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from prometheus_client import CollectorRegistry
from yarl import URL

from gateway.config.models import NO_RESILIENCE, ResilienceSpec
from gateway.config.settings import Settings
from gateway.types import BackendRequest, Call, ReadinessCheck

Usage = Callable[[], Mapping[str, int | float]]
"""A backend's pool use right now, by name (slots, connections, busy/queued workers)."""

Stream = Callable[[BackendRequest], AsyncGenerator[bytes, None]]
"""A call whose answer is streamed: chunks of NDJSON, pulled as the client reads."""


class Passthrough(Protocol):
    """What a passthrough (`proxy:`) endpoint needs of its backend."""

    @property
    def name(self) -> str: ...

    @property
    def session(self) -> aiohttp.ClientSession: ...

    @property
    def slots(self) -> asyncio.Semaphore:
        """Held while a request is in flight: the backend's cap on calls."""
        ...

    def url(self, encoded_path: str, query_string: str = "") -> URL:
        """The next host's URL for an already percent-encoded path."""
        ...


@dataclass(frozen=True, slots=True)
class LiveBackend:
    """One open backend: its Call, and what else the app may use of it."""

    name: str
    kind: str
    call: Call
    hosts: tuple[tuple[str, Call], ...]
    """One Call per host (per-host breakers); a single host is the backend itself."""
    stream: Stream | None = None
    passthrough: Passthrough | None = None
    """Set for a backend that can serve `proxy:` endpoints."""
    readiness: ReadinessCheck | None = None
    resilience: ResilienceSpec = NO_RESILIENCE
    """The backend's own policy settings (breaker, bulkhead...), shared by all its calls."""
    usage: Usage | None = None
    """What its pool is doing now (the status page): e.g. `{"in_use": 3, "max": 100}`."""


@dataclass(frozen=True, slots=True)
class OpenContext:
    """What a kind may use while opening a backend: the backend's own exit stack (closed
    when the backend is, at shutdown or when a reload removes it), the app's (closed at
    shutdown: for what every backend of a kind shares), settings and metrics."""

    stack: AsyncExitStack
    settings: Settings
    registry: CollectorRegistry
    shared: dict[str, object] = field(default_factory=dict)
    """What kinds share within one app, by key (one collector of every executor pool)."""
    app_stack: AsyncExitStack | None = None
    """The app's own stack; None: the same as `stack` (one-off tools open everything once)."""

    @property
    def lifetime(self) -> AsyncExitStack:
        """The stack of what outlives any one backend: the app's."""
        return self.app_stack if self.app_stack is not None else self.stack
