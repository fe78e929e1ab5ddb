"""The config file's contract as frozen pydantic models: endpoints, calls, policies.

Field-level rules (types, ranges, unknown fields) live here; rules that need more than one
field live in `gateway.config.checks`. Each backend kind's model lives in that kind's module
(`gateway/backends/`) and extends `BackendSpec`; the whole file (`GatewaySpec`) is assembled
in `gateway.config.document` from the registered kinds.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, JsonValue, model_validator

from gateway.config.docs import EndpointDocs
from gateway.config.edge import CorsSpec, EndpointAuth
from gateway.config.requests import RequestSpec
from gateway.config.shaping import JoinSpec, Shape
from gateway.config.values import Duration, Lapse, Share, UpperMethod

Problem = tuple[str, str]
"""(location like `endpoints[2].calls[0].backend`, why)."""


class Model(BaseModel):
    """Base of every config model: unknown fields are errors, values are frozen after load."""

    model_config = ConfigDict(extra="forbid", frozen=True)


RetryOn = Literal["connect", "timeout"] | Annotated[int, Field(ge=400, le=599)]
DEFAULT_RETRY_ON: tuple[RetryOn, ...] = ("connect", "timeout", 502, 503, 504)


class RetrySpec(Model):
    """Retries of idempotent calls: jittered exponential backoff, within a retry budget."""

    attempts: int = Field(default=3, ge=1, le=10, description="Tries in all, the first included.")
    backoff: Duration = Field(default=0.05, description="Wait before the first retry (jittered).")
    max_backoff: Duration = Field(default=1.0, description="Longest wait between tries.")
    on: list[RetryOn] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_ON),
        description="What is retried: `connect` errors, `timeout`s, and these statuses.",
    )
    budget: Share = Field(
        default=0.2,
        description="Retries, as a share of the calls made to the backend in the last 10 s.",
    )
    min_retries: int = Field(
        default=3,
        ge=0,
        description="Retries per 10 s always allowed, whatever the share (for light traffic).",
    )


class BreakerSpec(Model):
    """A circuit breaker per host: opens after `failures` consecutive failures within `window`."""

    failures: int = Field(default=5, ge=1, description="Consecutive failures that open it.")
    window: Duration = Field(default=10.0, description="Failures older than this are forgotten.")
    cooldown: Duration = Field(default=5.0, description="Open this long, then one probe call.")


class HedgeSpec(Model):
    """Hedged requests: when no answer came after `after`, send another copy (up to `max`)."""

    after: Duration = Field(default=0.1, description="Wait this long before each extra copy.")
    max: int = Field(default=1, ge=0, le=3, description="Extra copies at most; 0 turns it off.")


class CacheSpec(Model):
    """Keeping answers of idempotent calls (see gateway/policies/cache.py)."""

    ttl: Duration | None = Field(
        default=None,
        description="How long an answer stays fresh; overrides the upstream's max-age/Expires. "
        "Unset: as the upstream says (not kept when it says nothing).",
    )
    stale: Lapse = Field(
        default=0.0,
        description="After expiry, serve the old answer this long while one refresh runs.",
    )
    max_entries: int = Field(default=10_000, ge=1, description="Answers kept at most.")
    shared: bool = Field(
        default=False,
        description="One entry for every client. Default: one per authenticated identity, so "
        "a user's answer never reaches another user.",
    )
    store: Literal["memory", "redis"] = Field(
        default="memory",
        description="memory: this process's; redis: the cluster's Redis (`cluster.redis`), "
        "shared by every process and replica (values compressed, TTL in Redis).",
    )


class ResilienceSpec(Model):
    """Resilience policies of a backend (see docs/resilience.md); every one is off by default."""

    retry: RetrySpec | None = None
    breaker: BreakerSpec | None = None
    concurrency: int | None = Field(
        default=None, ge=1, description="Bulkhead: calls in flight; over it a call fails at once."
    )
    hedge: HedgeSpec | None = None
    coalesce: bool = Field(
        default=False, description="Identical concurrent GETs share one upstream request."
    )
    cache: CacheSpec | None = Field(
        default=None, description="Keep answers of idempotent calls to this backend."
    )


NO_RESILIENCE = ResilienceSpec()


class BackendSpec(Model):
    """What every backend kind's model has (see gateway/backends/registry.py for the rest)."""

    kind: str
    timeout: Duration = Field(default=2.0, description="Default per-call timeout.")


class CallSpec(Model):
    """One backend call of an aggregation endpoint, and how its result is shaped."""

    name: str | None = Field(default=None, description="Defaults to `group`, else `call<index>`.")
    backend: str
    path: str = "/"
    method: str = Field(
        default="GET",
        description="http: the HTTP method (default GET); legacy: the client method to call.",
    )
    query: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    args: dict[str, str] = Field(
        default_factory=dict, description="legacy/compute: keyword arguments (templates)."
    )
    pick: str | None = Field(
        default=None,
        alias="target",
        description="Take this (dotted) field of the answer first, e.g. `items`.",
    )
    allow: list[str] | None = None
    deny: list[str] | None = None
    rename: dict[str, str] = Field(default_factory=dict)
    group: str | None = None
    required: bool = False
    timeout: Duration | None = None
    needs: list[str] = Field(default_factory=list)
    idempotent: bool | None = Field(
        default=None,
        description="May be retried or hedged; default: true for GET, HEAD, OPTIONS over http.",
    )
    retry: RetrySpec | None = Field(default=None, description="Overrides the backend's `retry`.")
    hedge: HedgeSpec | None = Field(default=None, description="Overrides the backend's `hedge`.")
    coalesce: bool | None = Field(default=None, description="Overrides the backend's `coalesce`.")
    sql: str | None = Field(
        default=None,
        description="postgres: the statement; request values reach it only as `params`.",
    )
    params: list[str] = Field(
        default_factory=list, description="postgres: bind parameters $1, $2...: e.g. '{id:int}'."
    )
    result: Literal["one", "many", "value", "stream"] | None = Field(
        default=None,
        description="postgres: one row (404 if none), many rows (default), the first column "
        "of the first row, or stream (NDJSON; the endpoint's only call).",
    )
    cache: CacheSpec | None = Field(
        default=None, description="Overrides the backend's `cache` (idempotent calls only)."
    )
    for_each: str | None = Field(
        default=None,
        description="calls.<name>[.path]: a list in an earlier call's result (after its "
        "`target`); the call runs once per element, `{item.x}` reading the element. "
        "Implies `needs`.",
    )
    into: str | None = Field(
        default=None, description="for_each: each element gets its result under this key."
    )
    concurrency: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="for_each: this call's requests in flight for one client request.",
    )
    max_items: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="for_each: more elements than this fail the call, and nothing is sent.",
    )
    join: JoinSpec | None = Field(
        default=None,
        description="Attach this call's list elements to another call's by key. Implies `needs`.",
    )
    shape: Shape | None = Field(
        default=None,
        description="Array shaping of the result (move, del, append, flatten, sort, limit).",
    )
    body: JsonValue = Field(
        default=None,
        description="http: what the call sends: `forward` (the client's body as it came, with "
        "its Content-Type) or a JSON template (a string that is exactly one ref keeps the "
        "value's JSON type, e.g. '{body.items}'; text mixed with refs is text). Default: none.",
    )
    pass_errors: bool = Field(
        default=False,
        description="http: when this call fails the endpoint with a 4xx, answer that status "
        "and the backend's JSON body (5xx stays 502/504).",
    )
    background: bool = Field(
        default=False,
        description="Run after the response is sent; it never affects the answer (not "
        "`required`; only background calls may need it).",
    )


class ProxySpec(Model):
    """A passthrough route: method, body, status and headers streamed both ways."""

    backend: str
    path: str = Field(description="Upstream path template, e.g. /{rest}.")
    timeout: Duration | None = Field(
        default=None,
        description="Bounds the whole exchange (the wait for a slot, the upload, the "
        "upstream's head and whole body); defaults to the backend's.",
    )


class EndpointSpec(Model):
    """A route of the gateway: either an aggregation of `calls` or a `proxy`."""

    path: str = Field(pattern=r"^/")
    method: UpperMethod = "GET"
    timeout: Duration = Field(default=5.0, description="Deadline for the whole endpoint.")
    forward_query: list[str] = Field(default_factory=list)
    forward_headers: list[str] = Field(default_factory=list)
    error_details: bool = False
    max_body: ByteSize | None = Field(
        default=None, description="Request body limit; defaults to the process setting (1 MiB)."
    )
    calls: list[CallSpec] = Field(default_factory=list)
    proxy: ProxySpec | None = None
    cache_control: str | None = Field(
        default=None,
        description="Cache-Control of this endpoint's own answers, e.g. 'public, max-age=30'; "
        "with it the gateway answers ETag and 304 Not Modified to If-None-Match.",
    )
    shape: Shape | None = Field(
        default=None, description="Array shaping of the merged body, applied last."
    )
    auth: EndpointAuth | None = Field(
        default=None, description="Who may call: authenticators (gateway-wide `auth`), scopes."
    )
    rate_limit: list[str] = Field(
        default_factory=list, description="Names of gateway-wide `rate_limits`, all applied."
    )
    cors: CorsSpec | None = Field(
        default=None, description="Overrides the gateway-wide `cors` for this endpoint."
    )
    request: RequestSpec | None = Field(
        default=None,
        description="The client's JSON body (415 if not JSON, 400 if malformed), with an "
        "optional schema; `{body...}` templates read it.",
    )
    docs: EndpointDocs | None = Field(
        default=None, description="What the OpenAPI document says of the endpoint."
    )

    @model_validator(mode="after")
    def _name_calls(self) -> EndpointSpec:
        named = [
            call if call.name else call.model_copy(update={"name": call.group or f"call{index}"})
            for index, call in enumerate(self.calls)
        ]
        object.__setattr__(self, "calls", named)
        return self
