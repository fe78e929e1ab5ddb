"""Backends: each configured backend becomes a `Call` at start-up, owned by the app's lifespan.

`open_backends` enters every resource (client session, pools, executors) on one exit stack,
so shutdown closes them in reverse order even when start-up fails half-way.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from gateway.backends.http import HttpUpstream, http_call, open_session
from gateway.spec import GatewaySpec
from gateway.types import Call


@dataclass(slots=True)
class Backends:
    """The live backends of one app: a `Call` per name, and HTTP upstreams for proxies."""

    calls: dict[str, Call] = field(default_factory=dict)
    upstreams: dict[str, HttpUpstream] = field(default_factory=dict)


async def open_backends(spec: GatewaySpec, stack: AsyncExitStack) -> Backends:
    """Create every backend of `spec`; their resources close when `stack` does."""
    backends = Backends()
    http_specs = {name: b for name, b in spec.backends.items() if b.kind == "http"}
    if http_specs:
        total = sum(b.max_connections for b in http_specs.values())
        session = await stack.enter_async_context(open_session(total))
        for name, backend in http_specs.items():
            upstream = HttpUpstream.from_spec(name, backend, session)
            backends.upstreams[name] = upstream
            backends.calls[name] = http_call(upstream)
    return backends
