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
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from gateway.engine.context import RequestContext, identity_digest
from gateway.engine.templates import Ref, lookup
from gateway.errors import CallError, Forbidden, MissingValue, Unauthorized
from gateway.web.guard_metrics import GuardMetrics
from gateway.web.problems import problem
from gateway.web.steps import Step

log = logging.getLogger("gateway.auth")

Identity = dict[str, Any]
"""The `auth` source: `sub`, `claims`, `scopes`, `authenticator`, and `key` for API keys."""


@dataclass(eq=False, slots=True)
class Accepted:
    """A credential's identity, built once when it is verified (or looked up) and cached
    with it, so a repeated credential costs a cache probe: the `auth` source itself, its
    scopes as a set, its `RequestContext.identity` digest, and each endpoint's verdict on it
    (`grants`), remembered once decided."""

    identity: Identity
    granted: frozenset[str] = field(init=False)
    digest: str = field(init=False)
    verdicts: dict[int, Forbidden | None] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        scopes = self.identity.get("scopes") or ()
        self.granted = frozenset(s for s in scopes if isinstance(s, str))
        self.digest = identity_digest(self.identity)

    def __repr__(self) -> str:
        return f"<Accepted {self.identity.get('authenticator')} sub={self.identity.get('sub')!r}>"


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

    async def authenticate(self, context: RequestContext) -> Accepted | None:
        """The identity of the request's credential; None when it carries none of ours.

        Raises Unauthorized for a credential that does not verify."""
        ...


_steps = count()
"""Numbers the auth steps: an `Accepted` remembers each endpoint's verdict by it."""
_UNDECIDED: Any = object()


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
    needs = tuple(needed)
    number = next(_steps)
    # the metric children, made once: `labels()` per request costs more than the rest
    counted = tuple(
        (a, {o: metrics.auth.labels(a.name, o) for o in _OUTCOMES}) for a in authenticators
    )
    first = counted[0][1]
    chain = tuple(authenticators)
    kept = {h.lower() for h in forwarded}
    # the credential headers, as the ASGI scope spells them (lower-case bytes)
    stripped = frozenset(a.header.encode("latin-1") for a in chain if a.header not in kept)

    async def step(request: Request, context: RequestContext) -> RequestContext | Response:
        failure: Unauthorized | None = None
        accepted: Accepted | None = None
        for authenticator, outcomes in counted:
            try:
                accepted = await authenticator.authenticate(context)
            except Unauthorized as exc:
                outcomes["rejected"].inc()
                failure = failure or exc
                continue
            except CallError as exc:  # the key store cannot answer: the key may be valid
                outcomes["unavailable"].inc()
                log.debug("auth %s: cannot check a credential: %s", authenticator.name, exc)
                return problem(
                    503,
                    "cannot check the credential now; retry later",
                    headers={"Retry-After": "1"},
                )
            if accepted is not None:
                outcomes["accepted"].inc()
                break
        if accepted is None:
            if failure is None:
                first["missing"].inc()
            return _unauthorized(chain, failure)
        refusal = accepted.verdicts.get(number, _UNDECIDED)
        if refusal is _UNDECIDED:
            refusal = accepted.verdicts[number] = grants(accepted, required, needs)
        if refusal is not None:
            outcomes["forbidden"].inc()
            return _forbidden(refusal)
        if stripped:
            scope = request.scope
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k not in stripped]
        return context.with_auth(accepted.identity, accepted.digest)

    return step


_OUTCOMES = ("accepted", "rejected", "missing", "forbidden", "unavailable")


def grants(accepted: Accepted, required: Sequence[str], needed: Sequence[Ref]) -> Forbidden | None:
    """Why an endpoint requiring `required` scopes and reading `needed` refs refuses this
    identity (403), or None when it may pass. Depends on nothing but the two, so the step
    decides it once per cached credential."""
    missing = [s for s in required if s not in accepted.granted]
    if missing:
        return Forbidden(f"missing scope(s): {' '.join(missing)}", scopes=tuple(required))
    sources = {"auth": accepted.identity}
    for ref in needed:
        try:
            lookup(ref, sources)
        except MissingValue:
            name = ".".join((ref.key, *ref.field))
            return Forbidden(f"the credential has no {name}, which this endpoint needs")
    return None


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
