"""CORS (the Fetch standard's cross-origin rules) as the first step of an endpoint's route.

A preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered here, 204, before
authentication, limits or any backend: browsers send preflights without credentials, so
nothing after this step could accept them. Starlette hands a route only the methods it lists,
so a route whose endpoint has CORS also lists OPTIONS (`route_methods`); a plain OPTIONS
request that is not a preflight still gets 405 there, unless OPTIONS is the endpoint's own
method (a passthrough forwards every method). Several endpoints may share a path with
different methods and CORS settings: the preflight is answered with the settings of the
endpoint whose method it asks for.

Any other request from an allowed origin gets `Access-Control-Allow-Origin` (and the
credentials and exposed headers) on whatever answer it gets, a 401 or 429 included, so a page
can read why it was refused. A disallowed origin gets no CORS header at all: the browser then
withholds the answer from the page. `Vary: Origin` is on every answer, so a cache never
serves one origin's answer to another.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from gateway.config.edge import CorsSpec
from gateway.engine.context import RequestContext
from gateway.web.problems import problem
from gateway.web.steps import Step, add_response_headers

_VARY = (b"vary", b"origin")


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """One `cors:` section, with its answers encoded once."""

    any_origin: bool
    origins: frozenset[str]
    credentials: bool
    preflight: tuple[tuple[bytes, bytes], ...]
    """What a preflight answer adds besides the origin (methods, headers, max age)."""
    actual: tuple[tuple[bytes, bytes], ...]
    """What any other answer adds besides the origin (credentials, exposed headers)."""

    @classmethod
    def from_spec(cls, spec: CorsSpec) -> CorsPolicy:
        credentials = (
            [(b"access-control-allow-credentials", b"true")] if spec.allow_credentials else []
        )
        preflight = [
            (b"access-control-allow-methods", ", ".join(spec.allow_methods).encode()),
            *credentials,
        ]
        if spec.allow_headers:
            preflight.append(
                (b"access-control-allow-headers", ", ".join(spec.allow_headers).encode("latin-1"))
            )
        if spec.max_age is not None:
            preflight.append((b"access-control-max-age", str(math.ceil(spec.max_age)).encode()))
        actual = list(credentials)
        if spec.expose_headers:
            actual.append(
                (b"access-control-expose-headers", ", ".join(spec.expose_headers).encode("latin-1"))
            )
        return cls(
            any_origin="*" in spec.allow_origins,
            origins=frozenset(o.lower() for o in spec.allow_origins if o != "*"),
            credentials=spec.allow_credentials,
            preflight=tuple(preflight),
            actual=tuple(actual),
        )

    def allow_origin(self, origin: str | None) -> bytes | None:
        """The `Access-Control-Allow-Origin` value for a request from `origin`, or None."""
        if origin is None:
            return None
        if origin.lower() in self.origins:
            return origin.encode("latin-1")
        if self.any_origin:
            # `*` is never sent with credentials (gateway check refuses that config)
            return b"*"
        return None


def route_methods(methods: Sequence[str], policy: CorsPolicy | None) -> list[str]:
    """The methods a route lists: with CORS, OPTIONS too, so preflights reach its steps."""
    if policy is None or "OPTIONS" in methods:
        return list(methods)
    return [*methods, "OPTIONS"]


def cors_step(
    policy: CorsPolicy, by_method: Mapping[str, CorsPolicy], options_is_served: bool
) -> Step:
    """The step of an endpoint with CORS. `by_method` holds the policy of every endpoint on
    the same path, by method (for preflights); `options_is_served` is true when OPTIONS is
    one of the endpoint's own methods (a passthrough)."""

    async def step(request: Request, context: RequestContext) -> RequestContext | Response:
        headers = context.headers
        origin = headers.get("origin")
        if context.method == "OPTIONS":
            asked = headers.get("access-control-request-method")
            if asked is not None and origin is not None:
                return _preflight(by_method.get(asked.upper(), policy), origin)
            if not options_is_served:
                return problem(
                    405, "OPTIONS is not allowed here", headers={"Allow": _allow(by_method)}
                )
        allowed = policy.allow_origin(origin)
        if allowed is None:
            add_response_headers(request, (_VARY,))
        else:
            add_response_headers(
                request, ((b"access-control-allow-origin", allowed), *policy.actual, _VARY)
            )
        return context

    return step


def _preflight(policy: CorsPolicy, origin: str) -> Response:
    response = Response(status_code=204)
    allowed = policy.allow_origin(origin)
    added = [_VARY]
    if allowed is not None:
        added += [(b"access-control-allow-origin", allowed), *policy.preflight]
    response.raw_headers = [*response.raw_headers, *added]
    return response


def _allow(by_method: Mapping[str, CorsPolicy]) -> str:
    return ", ".join(sorted(m for m in by_method if m != "OPTIONS"))
