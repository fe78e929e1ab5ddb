"""The vocabulary every layer composes: a backend call is a function from request to response.

A backend of any kind (HTTP, SQL, a thread-pool client, a process-pool function) is turned into
a `Call` once, at start-up; policies (timeouts, retries, breakers...) are `Policy` functions
that wrap a `Call` and return another one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, dataclass_transform

JSON = Any
"""A decoded JSON value (orjson gives dict, list, str, int, float, bool or None)."""

_Class = TypeVar("_Class")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[_Class]) -> type[_Class]:
    """A frozen slotted dataclass to the type checker (assigning a field is an error, as
    `dataclass(frozen=True)` makes it), a plain slotted one at run time, for the values made
    per call (a request, its response, its outcome): a frozen dataclass's `__init__` sets
    each field through `object.__setattr__`, 2.5 us for a BackendRequest (9 fields) against
    0.94 us (`python -m timeit`, keywords, best of 5). Equal and hashed by fields, as
    when frozen."""
    return dataclass(slots=True, unsafe_hash=True)(cls)


@record
class BackendRequest:
    """One call to one backend, fully rendered from the client request: no templates left.

    HTTP backends read `method`, `path` (already percent-encoded), `query`, `headers` and
    `body`; other kinds read `args` (SQL bind parameters, keyword arguments of a blocking
    client).
    """

    method: str = "GET"
    path: str = "/"
    query: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    args: Mapping[str, Any] = field(default_factory=dict)
    deadline: float | None = None
    """Event-loop time (`loop.time()`) by which the whole call must be done, retries included;
    policies read it so a retry or backoff never outlives the endpoint. None: no deadline."""
    identity: str = ""
    """Who the call is made for when the client authenticated ("" otherwise): cached answers
    are kept per identity, so one user's answer never reaches another."""
    body: bytes | None = None
    """The bytes to send (a call's `body:`: the client's own, or a rendered JSON template);
    None: no body. The same bytes go with every try of a retried call."""
    content_type: str | None = None
    """The body's Content-Type (the client's for `body: forward`); None: no header."""


@record
class BackendResponse:
    """What a successful call produced: the upstream status and the decoded JSON body."""

    status: int
    body: JSON
    max_age: float | None = None
    """Seconds the upstream says the answer may be reused (Cache-Control max-age, Expires);
    None: it did not say."""
    cacheable: bool = True
    """False when the upstream forbids keeping the answer (no-store, private)."""


Call = Callable[[BackendRequest], Awaitable[BackendResponse]]
Policy = Callable[[Call], Call]
ReadinessCheck = Callable[[], Awaitable[dict[str, object]]]
"""A readiness check of an open backend: returns details to report, raises for "not ready"."""
