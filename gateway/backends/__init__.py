"""Backends: each configured backend becomes a `Call` at start-up, owned by the app's lifespan.

`open_backends` enters every resource (client session, pools, executors) on one exit stack,
so shutdown closes them in reverse order even when start-up fails half-way.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from gateway.backends.executors import open_executors
from gateway.backends.http import HttpUpstream, close_session, http_call, open_session
from gateway.backends.pools import PoolStats
from gateway.backends.postgres import PostgresPool, open_postgres, postgres_call
from gateway.settings import Settings
from gateway.spec import GatewaySpec, PostgresBackend
from gateway.types import Call


@dataclass(slots=True)
class Backends:
    """The live backends of one app: a `Call` per name, and HTTP upstreams for proxies."""

    calls: dict[str, Call] = field(default_factory=dict)
    upstreams: dict[str, HttpUpstream] = field(default_factory=dict)
    postgres: dict[str, PostgresPool] = field(default_factory=dict)  # for streaming endpoints
    pools: dict[str, PoolStats] = field(default_factory=dict)  # thread/process pools, /metrics


async def open_backends(
    spec: GatewaySpec, stack: AsyncExitStack, settings: Settings | None = None
) -> Backends:
    """Create every backend of `spec`; their resources close when `stack` does."""
    backends = Backends()
    postgres = {n: b for n, b in spec.backends.items() if isinstance(b, PostgresBackend)}
    if postgres:
        database_url = (settings or Settings()).database_url
        backends.postgres.update(await open_postgres(postgres, stack, database_url))
        backends.calls.update({n: postgres_call(p) for n, p in backends.postgres.items()})
    http_specs = {name: b for name, b in spec.backends.items() if b.kind == "http"}
    if http_specs:
        total = sum(b.max_connections for b in http_specs.values())
        session = open_session(total)
        stack.push_async_callback(close_session, session)
        for name, backend in http_specs.items():
            upstream = HttpUpstream.from_spec(name, backend, session)
            backends.upstreams[name] = upstream
            backends.calls[name] = http_call(upstream)
    executor_calls, pools = await open_executors(spec, stack, settings or Settings())
    backends.calls.update(executor_calls)
    backends.pools.update(pools)
    return backends
