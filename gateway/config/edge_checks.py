"""Cross-reference checks of what faces frontends: authenticators, CORS and rate limits.

An endpoint names only authenticators and limits the file declares; `{auth...}` is read only
where the endpoint authenticates, and only what its authenticators give (`{auth.claims.x}`
needs a jwt one, `{auth.key.name}` an api_key one); a rate limit's key reads what every
endpoint using it has. HS* algorithms come only with a secret, and a secret only with them;
`*` never goes with credentials (browsers refuse it). Each problem names its exact place.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from gateway.backends.registry import kind_of
from gateway.config.document import GatewaySpec
from gateway.config.edge import (
    MIN_SECRET_BYTES,
    ApiKeyAuth,
    CorsSpec,
    JwtAuth,
)
from gateway.config.models import CallSpec, EndpointSpec, Problem
from gateway.engine.templates import Ref, parse_template
from gateway.errors import TemplateSyntaxError

AUTH_VALUES = ("sub", "claims", "scopes", "authenticator", "key")
"""What `{auth.<name>...}` may read (see gateway/web/auth)."""


def check_edge(spec: GatewaySpec) -> list[Problem]:
    """Every problem of the `auth`, `cors` and `rate_limits` sections and of their use."""
    problems: list[Problem] = []
    for name, auth in spec.auth.items():
        where = f"auth.{name}"
        if isinstance(auth, JwtAuth):
            problems += _check_jwt(auth, where)
        else:
            problems += _check_api_key(spec, auth, where)
    if spec.cors is not None:
        problems += _check_cors(spec.cors, "cors")
    for name, limit in spec.rate_limits.items():
        try:
            template = parse_template(limit.key)
        except TemplateSyntaxError as exc:
            problems.append((f"rate_limits.{name}.key", str(exc)))
            continue
        for ref in template.refs:
            if ref.source == "calls":
                problems.append(
                    (f"rate_limits.{name}.key", f"{ref}: a limit is taken before any call runs")
                )
    for index, endpoint in enumerate(spec.endpoints):
        problems += _check_endpoint(spec, endpoint, f"endpoints[{index}]")
    return problems


def _check_jwt(auth: JwtAuth, where: str) -> list[Problem]:
    problems: list[Problem] = []
    symmetric = [a for a in auth.algorithms if a.startswith("HS")]
    if auth.secret is None and symmetric:
        problems.append(
            (
                f"{where}.algorithms",
                f"{', '.join(symmetric)} only with `secret`: with public keys an HMAC "
                "algorithm lets anyone who has the public key sign tokens",
            )
        )
    if auth.secret is not None:
        asymmetric = [a for a in auth.algorithms if not a.startswith("HS")]
        if asymmetric:
            problems.append(
                (
                    f"{where}.algorithms",
                    f"{', '.join(asymmetric)} need public keys (`jwks_url` or `jwks_file`); "
                    "with `secret` use HS256, HS384 or HS512",
                )
            )
        if len(auth.secret.encode()) < MIN_SECRET_BYTES:
            problems.append(
                (f"{where}.secret", f"shorter than {MIN_SECRET_BYTES} bytes: guessable offline")
            )
    return problems


def _check_api_key(spec: GatewaySpec, auth: ApiKeyAuth, where: str) -> list[Problem]:
    backend = spec.backends.get(auth.store)
    if backend is None:
        known = ", ".join(sorted(spec.backends)) or "none"
        return [(f"{where}.store", f"unknown backend {auth.store!r} (known: {known})")]
    # the keys table is read and written with SQL: the store must be a backend whose calls
    # run SQL (a postgres backend), asked of its kind's declared call fields, not its name
    if "sql" not in kind_of(backend).call_fields:
        return [(f"{where}.store", f"{auth.store!r} does not run SQL: use a postgres backend")]
    return []


def _check_cors(cors: CorsSpec, where: str) -> list[Problem]:
    problems: list[Problem] = []
    if cors.allow_credentials:
        for field in ("allow_origins", "allow_headers", "expose_headers"):
            if "*" in getattr(cors, field):
                problems.append(
                    (
                        f"{where}.{field}",
                        "`*` with allow_credentials: browsers refuse it; list the values",
                    )
                )
    for origin in cors.allow_origins:
        if origin != "*" and (
            not origin.startswith(("http://", "https://"))
            or "/" in origin.split("://", 1)[1]
            or origin != origin.strip()
        ):
            problems.append(
                (
                    f"{where}.allow_origins",
                    f"{origin!r} is not an origin like 'https://shop.example' (no path)",
                )
            )
    return problems


def _check_endpoint(spec: GatewaySpec, endpoint: EndpointSpec, where: str) -> list[Problem]:
    problems: list[Problem] = []
    kinds: set[str] = set()
    if endpoint.auth is not None:
        known = ", ".join(sorted(spec.auth)) or "none"
        for name in endpoint.auth.use:
            auth = spec.auth.get(name)
            if auth is None:
                problems.append(
                    (f"{where}.auth.use", f"unknown authenticator {name!r} (known: {known})")
                )
            else:
                kinds.add(auth.kind)
    if endpoint.cors is not None:
        problems += _check_cors(endpoint.cors, f"{where}.cors")
    seen: set[str] = set()
    for l_index, name in enumerate(endpoint.rate_limit):
        at = f"{where}.rate_limit[{l_index}]"
        if name in seen:
            problems.append((at, f"{name!r} is listed twice"))
        seen.add(name)
        limit = spec.rate_limits.get(name)
        if limit is None:
            known = ", ".join(sorted(spec.rate_limits)) or "none"
            problems.append((at, f"unknown rate limit {name!r} (known: {known})"))
            continue
        try:
            refs = parse_template(limit.key).refs
        except TemplateSyntaxError:
            continue  # reported at rate_limits.<name>.key
        params = _path_params(endpoint.path)
        for ref in refs:
            if ref.source == "path" and ref.key not in params:
                problems.append((at, f"{name}'s key {ref}: the endpoint path has no {ref.key!r}"))
            elif ref.source == "auth":
                problems += _check_auth_ref(ref, endpoint, kinds, at, f"{name}'s key ")
    for location, ref in call_refs(endpoint, where):
        if ref.source == "auth":
            problems += _check_auth_ref(ref, endpoint, kinds, location, "")
    return problems


def _check_auth_ref(
    ref: Ref, endpoint: EndpointSpec, kinds: set[str], where: str, prefix: str
) -> list[Problem]:
    if endpoint.auth is None:
        return [(where, f"{prefix}{ref}: the endpoint has no `auth`, so nothing to read")]
    if ref.key not in AUTH_VALUES:
        return [(where, f"{prefix}{ref}: auth has {', '.join(AUTH_VALUES)}")]
    if ref.key == "claims" and kinds and "jwt" not in kinds:
        return [(where, f"{prefix}{ref}: claims come from a jwt authenticator; none is used")]
    if ref.key == "key" and kinds and "api_key" not in kinds:
        return [(where, f"{prefix}{ref}: key values come from an api_key authenticator")]
    return []


def _path_params(path: str) -> set[str]:
    # as gateway.config.checks.path_params, which imports this module
    return {m.split(":")[0] for m in re.findall(r"\{([^{}]+)\}", path)}


def call_refs(endpoint: EndpointSpec, where: str) -> Iterator[tuple[str, Ref]]:
    """(location, ref) of every template of the endpoint's calls that parses."""
    for c_index, call in enumerate(endpoint.calls):
        for field, text in _call_templates(call):
            try:
                template = parse_template(text)
            except TemplateSyntaxError:
                continue  # reported by gateway.config.checks
            for ref in template.refs:
                yield f"{where}.calls[{c_index}].{field}", ref


def _call_templates(call: CallSpec) -> Iterator[tuple[str, str]]:
    yield "path", call.path
    yield from ((f"query.{k}", v) for k, v in call.query.items())
    yield from ((f"headers.{k}", v) for k, v in call.headers.items())
    yield from ((f"args.{k}", v) for k, v in call.args.items())
    yield from ((f"params[{i}]", v) for i, v in enumerate(call.params))
