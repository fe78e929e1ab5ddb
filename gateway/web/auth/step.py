"""The authentication step of an endpoint: who is calling, and may they.

The endpoint's authenticators (`auth: {use: [users, partners]}`) are tried in order; the
first that finds its credential and accepts it wins. Its identity becomes the `auth` template
source (`{auth.sub}`, `{auth.claims.tenant}`, `{auth.key.name}`, `{auth.scopes}`,
`{auth.authenticator}`).

* No credential, or one that does not verify: **401** problem+json with one
  `WWW-Authenticate` challenge per authenticator (RFC 6750: `error="invalid_token"` and a
  description when a credential was sent, no error when none was).
* A valid credential without every scope the endpoint lists, or without a value the
  endpoint's templates read (`{auth.claims.tenant}` of a token without `tenant`): **403**
  with `error="insufficient_scope"`.
* A store that cannot answer (API keys, database down): **503** with `Retry-After`.
* Either way nothing reaches a backend. The credential headers themselves are removed from
  the request unless the endpoint's `forward_headers` lists them, so a passthrough does not
  hand the client's token to the backend either.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from gateway.engine.context import RequestContext
from gateway.engine.templates import Ref, lookup
from gateway.errors import CallError, Forbidden, MissingValue, Unauthorized
from gateway.web.guard_metrics import GuardMetrics
from gateway.web.problems import problem
from gateway.web.steps import Step

log = logging.getLogger("gateway.auth")

Identity = dict[str, Any]
"""The `auth` source: `sub`, `claims`, `scopes`, `authenticator`, and `key` for API keys."""


class Authenticator(Protocol):
    """One named authenticator of the config file (`auth.<name>`)."""

    @property
    def name(self) -> str: ...

    @property
    def header(self) -> str:
        """The (lower-case) request header its credential travels in."""
        ...

    def challenge(self, error: Unauthorized | None) -> str:
        """Its `WWW-Authenticate` challenge, with the error when a credential failed."""
        ...

    async def authenticate(self, context: RequestContext) -> Identity | None:
        """The identity of the request's credential; None when it carries none of ours.

        Raises Unauthorized for a credential that does not verify."""
        ...


def auth_step(
    authenticators: Sequence[Authenticator],
    scopes: Sequence[str],
    needed: Sequence[Ref],
    forwarded: Sequence[str],
    metrics: GuardMetrics,
) -> Step:
    """The step of an endpoint with `auth`. `needed` are the `{auth...}` refs its templates
    (calls and rate-limit keys) read; `forwarded` its `forward_headers`."""
    required = tuple(scopes)
    chain = tuple(authenticators)
    kept = {h.lower() for h in forwarded}
    # the credential headers, as the ASGI scope spells them (lower-case bytes)
    stripped = frozenset(a.header.encode("latin-1") for a in chain if a.header not in kept)

    async def step(request: Request, context: RequestContext) -> RequestContext | Response:
        failure: Unauthorized | None = None
        identity: Identity | None = None
        for authenticator in chain:
            try:
                identity = await authenticator.authenticate(context)
            except Unauthorized as exc:
                metrics.auth.labels(authenticator.name, "rejected").inc()
                failure = failure or exc
                continue
            except CallError as exc:  # the key store cannot answer: the key may be valid
                metrics.auth.labels(authenticator.name, "unavailable").inc()
                log.debug("auth %s: cannot check a credential: %s", authenticator.name, exc)
                return problem(
                    503,
                    "cannot check the credential now; retry later",
                    headers={"Retry-After": "1"},
                )
            if identity is not None:
                metrics.auth.labels(authenticator.name, "accepted").inc()
                break
        if identity is None:
            if failure is None:
                metrics.auth.labels(chain[0].name, "missing").inc()
            return _unauthorized(chain, failure)
        try:
            _check_grants(identity, required, needed)
        except Forbidden as exc:
            metrics.auth.labels(identity["authenticator"], "forbidden").inc()
            return _forbidden(exc)
        if stripped:
            scope = request.scope
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k not in stripped]
        return context.with_source("auth", identity)

    return step


def _check_grants(identity: Identity, required: Sequence[str], needed: Sequence[Ref]) -> None:
    granted = identity.get("scopes") or ()
    missing = [s for s in required if s not in granted]
    if missing:
        raise Forbidden(f"missing scope(s): {' '.join(missing)}", scopes=tuple(required))
    sources = {"auth": identity}
    for ref in needed:
        try:
            lookup(ref, sources)
        except MissingValue:
            name = ".".join((ref.key, *ref.field))
            raise Forbidden(f"the credential has no {name}, which this endpoint needs") from None


def _unauthorized(chain: Sequence[Authenticator], failure: Unauthorized | None) -> Response:
    detail = str(failure) if failure is not None else "a credential is required"
    challenges = ", ".join(a.challenge(failure) for a in chain)
    return problem(401, detail, headers={"WWW-Authenticate": challenges})


def _forbidden(exc: Forbidden) -> Response:
    challenge = 'Bearer error="insufficient_scope"'
    if exc.scopes:
        challenge += f", scope={quoted(' '.join(exc.scopes))}"
    return problem(403, str(exc), headers={"WWW-Authenticate": challenge})


def quoted(text: str) -> str:
    """`text` as an RFC 9110 quoted-string (for challenge parameters)."""
    cleaned = "".join(c for c in text if c >= " " and c != "\x7f")
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'
