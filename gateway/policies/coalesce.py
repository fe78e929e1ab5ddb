"""Coalescing policy: identical concurrent calls to a backend share one upstream request.

Only idempotent calls are wrapped (`resolve_policies` decides: by default the GETs, HEADs and
OPTIONS of http backends). Identical means same method, path, query, headers, args and body,
except `X-Request-ID` (unique per client request by design) and the `X-Forwarded-*` headers
(who asked, not what was asked: the shared request tells the first caller's). The first
caller's request is sent; callers that arrive while it is in flight wait for the same answer.
The shared call runs as a task of its own so that one waiter leaving (its client went away,
its deadline passed) does not cancel it for the others; it is cancelled when the last waiter
leaves, so it never outlives all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from gateway.types import BackendRequest, BackendResponse, Call, Policy


@dataclass(slots=True)
class Flight:
    """One shared upstream request and how many callers wait for it."""

    task: asyncio.Task[BackendResponse]
    waiters: int = 0


Flights = dict[Hashable, Flight]

_PER_CLIENT = frozenset(
    {"x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}
)


def coalesce_key(request: BackendRequest) -> Hashable | None:
    """What makes two requests identical; None when the request cannot be compared."""
    headers = tuple((k, v) for k, v in request.headers if k.lower() not in _PER_CLIENT)
    try:
        key = (
            request.method,
            request.path,
            request.query,
            headers,
            _frozen(request.args),
            request.body,
            request.content_type,
        )
        hash(key)
    except TypeError:  # an argument that cannot be compared is never shared
        return None
    return key


def _frozen(value: Any) -> Hashable:
    """A hashable stand-in for args: SQL calls carry their bind parameters as a list."""
    if isinstance(value, Mapping):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value  # type: ignore[no-any-return]


def coalesce(flights: Flights, *, on_coalesced: Callable[[], None]) -> Policy:
    """Share in-flight identical requests through `flights` (one dict per backend)."""

    def policy(inner: Call) -> Call:
        async def call(request: BackendRequest) -> BackendResponse:
            key = coalesce_key(request)
            if key is None:
                return await inner(request)
            flight = flights.get(key)
            if flight is None:
                flight = flights[key] = Flight(asyncio.ensure_future(inner(request)))
                flight.task.add_done_callback(partial(_forget, flights, key, flight))
            else:
                on_coalesced()
            flight.waiters += 1
            try:
                return await asyncio.shield(flight.task)
            finally:
                flight.waiters -= 1
                if flight.waiters == 0 and not flight.task.done():
                    # nobody wants the answer any more; a later caller starts a fresh request
                    _forget(flights, key, flight)
                    flight.task.cancel()

        return call

    return policy


def _forget(flights: Flights, key: Hashable, flight: Flight, *_: object) -> None:
    if flights.get(key) is flight:
        del flights[key]
