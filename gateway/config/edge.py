"""The config of what faces frontends: authenticators, CORS, rate limits and the cluster store.

```yaml
auth:         {users: {kind: jwt, jwks_url: ...}, partners: {kind: api_key, store: db}}
cors:         {allow_origins: [https://shop.example], allow_credentials: true}
rate_limits:  {per_user: {key: "{auth.sub}", rate: 100/m, burst: 20}}
cluster:      {redis: ${REDIS_URL}}
endpoints:    [{path: /api/me, auth: {use: users, scopes: [profile:read]}, rate_limit: [per_user]}]
```

Field-level rules live here (a rate spelt `100/m`, a `${REDIS_URL}`, no `none` algorithm);
the rules that need the whole file (a named authenticator exists, `{auth...}` only where the
endpoint authenticates, `*` never with credentials) are in `gateway.config.edge_checks`.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from gateway.config.values import Duration, HttpMethod, Lapse, UpperMethod, parse_duration

AlgorithmName = Literal[
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "HS256",
    "HS384",
    "HS512",
]
JWT_ALGORITHMS: tuple[str, ...] = get_args(AlgorithmName)
"""Every signature algorithm an authenticator may accept; `none` is never one of them."""

MIN_SECRET_BYTES = 32
"""An HS256 secret shorter than the hash (RFC 7518 3.2) can be brute-forced offline."""


class Model(BaseModel):
    """The rules of `gateway.config.models.Model` (unknown fields are errors, values frozen);
    not that class itself, since `config.models` builds its endpoints from this module."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_algorithm(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() == "none":
        raise ValueError("`none` is not a signature algorithm: unsigned tokens are refused")
    return value


Algorithm = Annotated[AlgorithmName, BeforeValidator(_check_algorithm)]
Leeway = Annotated[
    float, BeforeValidator(parse_duration, json_schema_input_type=str | float), Field(ge=0)
]


class JwtAuth(Model):
    """Bearer JWTs, checked against keys from a JWKS URL or file, or against an HS* secret."""

    kind: Literal["jwt"]
    jwks_url: str | None = Field(
        default=None, pattern=r"^https?://", description="Where the IdP publishes its keys."
    )
    jwks_file: str | None = Field(
        default=None, description="A JWKS document on disk (relative to the working directory)."
    )
    secret: str | None = Field(
        default=None,
        description="HS* only: the shared secret, e.g. ${JWT_SECRET} or ${file:/run/secrets/jwt}.",
    )
    issuer: str | None = Field(default=None, description="Required `iss`; unset: not checked.")
    audience: str | list[str] | None = Field(
        default=None, description="Accepted `aud` value(s); unset: not checked."
    )
    algorithms: list[Algorithm] = Field(
        default_factory=lambda: list[AlgorithmName](["RS256"]),
        min_length=1,
        description="Accepted `alg` values.",
    )
    leeway: Leeway = Field(default=30.0, description="Clock skew allowed on exp/nbf/iat.")
    cache: Duration = Field(
        default=600.0,
        description="How long fetched keys (and tokens verified with them) are trusted.",
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtAuth:
        given = [n for n in ("jwks_url", "jwks_file", "secret") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `jwks_url`, `jwks_file` or `secret`")
        return self

    @property
    def symmetric(self) -> bool:
        """True when tokens are checked with a shared secret (HS*), not public keys."""
        return self.secret is not None


class ApiKeyAuth(Model):
    """API keys in a request header, kept hashed in a PostgreSQL backend's table."""

    kind: Literal["api_key"]
    header: str = Field(
        default="x-api-key", pattern=r"^[A-Za-z0-9-]+$", description="The request header."
    )
    store: str = Field(description="A postgres backend: the gateway creates its keys table there.")
    cache: Duration = Field(
        default=30.0,
        description="A key's lookup is reused this long: a revoked key stops working within it.",
    )


AuthSpec = Annotated[JwtAuth | ApiKeyAuth, Field(discriminator="kind")]
AUTH_KINDS = ("jwt", "api_key")


class CorsSpec(Model):
    """Which browser origins may call, with which methods and headers (Fetch standard CORS)."""

    allow_origins: list[str] = Field(
        min_length=1, description="Exact origins (`https://shop.example`), or `*`."
    )
    allow_methods: list[UpperMethod] = Field(
        default_factory=lambda: list[HttpMethod](["GET", "HEAD", "POST"]),
        description="Answered to preflights.",
    )
    allow_headers: list[str] = Field(
        default_factory=list, description="Request headers a page may send (preflight)."
    )
    expose_headers: list[str] = Field(
        default_factory=list, description="Response headers a page may read."
    )
    allow_credentials: bool = Field(
        default=False, description="Cookies and Authorization may be sent; never with `*`."
    )
    max_age: Duration | None = Field(
        default=None, description="How long a browser may cache a preflight answer."
    )


_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*(ms|s|m|h)")
_PERIODS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(value: Any) -> Any:
    """`"100/m"`, `"20/s"`, `"5/10s"` -> {"count": 100.0, "period": 60.0}."""
    if isinstance(value, str) and len(value) <= 32:
        match = _RATE.fullmatch(value.strip())
        if match:
            multiple = float(match.group(2)) if match.group(2) else 1.0
            period = multiple * _PERIODS[match.group(3)]
            count = float(match.group(1))
            if count > 0 and period > 0:
                return {"count": count, "period": period}
    if isinstance(value, dict):
        return value
    shown = value[:32] if isinstance(value, str) else value
    raise ValueError(f"{shown!r} is not a rate (use e.g. '100/m', '20/s' or '5/10s')")


class Rate(Model):
    """Requests per period: `100/m` is 100 per 60 s."""

    count: float = Field(gt=0)
    period: float = Field(gt=0)

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def __str__(self) -> str:
        return f"{self.count:g}/{self.period:g}s"


class RateLimitSpec(Model):
    """A token bucket per rendered key: `rate` refills it, `burst` is its size."""

    key: str = Field(description="A template: `{auth.sub}`, `{client.ip}`, `{header.x-tenant}`.")
    rate: Annotated[Rate, BeforeValidator(parse_rate)] = Field(
        description="Sustained rate, e.g. `100/m` or `20/s`."
    )
    burst: int | None = Field(
        default=None, ge=1, description="Bucket size (requests at once); default: the rate's count."
    )

    @property
    def capacity(self) -> float:
        """The bucket's size in requests."""
        return (
            float(self.burst) if self.burst is not None else max(1.0, math.floor(self.rate.count))
        )


def _check_redis_url(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return None  # `${REDIS_URL}` unset: each process limits alone
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("a redis:// (or rediss://, unix://) URL, e.g. ${REDIS_URL}")
    return text


class ClusterSpec(Model):
    """What the gateway's processes and replicas share: rate-limit buckets in one Redis."""

    redis: Annotated[str | None, BeforeValidator(_check_redis_url)] = Field(
        default=None,
        description="redis:// URL, e.g. ${REDIS_URL} (empty or unset: each process limits alone).",
    )
    lease: Lapse = Field(
        default=0.1,
        le=1.0,
        description="How long a process may spend shared tokens it took ahead from Redis "
        "(a lease: fewer round trips, less even between processes near the limit), at most "
        "1s; 0: every take asks Redis.",
    )


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class EndpointAuth(Model):
    """Which authenticators an endpoint takes (the first that accepts wins) and what it needs."""

    use: Annotated[list[str], BeforeValidator(_one_or_many)] = Field(
        min_length=1, description="An authenticator's name, or a list of them, tried in order."
    )
    scopes: list[str] = Field(
        default_factory=list, description="Every one must be granted, else 403."
    )
