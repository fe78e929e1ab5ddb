"""The config file's contract as frozen pydantic models, and its cross-reference checks.

Field-level rules (types, ranges, unknown fields) live on the models; rules that need more
than one field (a call names a known backend, `needs` has no cycle, a template refers to a
path parameter the endpoint has) live in `check_references`, which returns every problem with
its exact location so `gateway check` can list them all at once.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ByteSize, ConfigDict, Field, model_validator
from yarl import URL

from gateway.sql_checks import check_sql_call
from gateway.targets import TargetError, has_method, is_class, picklable_function, resolve
from gateway.templates import Ref, Template, TemplateSyntaxError, parse_template

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers that describe one connection, never forwarded (RFC 9110 7.6.1)."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def parse_duration(value: Any) -> Any:
    """`"250ms"`, `"2s"`, `"1m"` or a number of seconds -> seconds as a float."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '250ms' or '2s'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            number, unit = float(match.group(1)), match.group(2) or "s"
            return number * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]
    raise ValueError(f"{value!r} is not a duration (use e.g. '250ms', '2s' or a number of seconds)")


Duration = Annotated[
    float,
    BeforeValidator(parse_duration, json_schema_input_type=str | float),
    Field(gt=0),
]
HttpMethod = Annotated[
    Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
]


class Model(BaseModel):
    """Base of every config model: unknown fields are errors, values are frozen after load."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_base_url(url: str) -> str:
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
    if parsed.query_string or parsed.fragment:
        raise ValueError(f"{url!r} must not have a query or fragment")
    return url.rstrip("/")


BaseUrl = Annotated[str, BeforeValidator(lambda v: _check_base_url(v) if isinstance(v, str) else v)]


def parse_share(value: Any) -> Any:
    """`"20%"` or a fraction like `0.2` -> 0.2 (a share of something, between 0 and 1)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage like '20%'") from None
    return value


Share = Annotated[
    float, BeforeValidator(parse_share, json_schema_input_type=str | float), Field(ge=0, le=1)
]
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
        default=0.2, description="Retries in flight, as a share of the backend's active calls."
    )
    min_retries: int = Field(
        default=3, ge=0, description="Retries in flight always allowed, whatever the budget."
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


class HttpBackend(ResilienceSpec):
    """An HTTP upstream: one base URL, or several used round-robin."""

    kind: Literal["http"]
    url: BaseUrl | None = None
    urls: list[BaseUrl] | None = Field(default=None, min_length=1)
    timeout: Duration = Field(default=2.0, description="Default per-call timeout.")
    max_connections: int = Field(
        default=100, ge=1, description="Calls in flight to this backend; excess calls wait."
    )

    @model_validator(mode="after")
    def _one_of_url_or_urls(self) -> HttpBackend:
        if (self.url is None) == (self.urls is None):
            raise ValueError("give exactly one of `url` or `urls`")
        return self

    @property
    def base_urls(self) -> list[str]:
        return [self.url] if self.url is not None else list(self.urls or [])


ImportPath = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description="`package.module:attribute`, importable by the gateway process.",
    ),
]


class LegacyBackend(Model):
    """A blocking Python client run in a bounded thread pool of its own (see backends/legacy)."""

    kind: Literal["legacy"]
    target: ImportPath = Field(
        description="A class (built once with `options` as keyword arguments; calls name a "
        "`method`) or a function (called with `options` and the call's `args`)."
    )
    options: dict[str, Any] = Field(default_factory=dict)
    threads: int = Field(default=8, ge=1, le=1024, description="Threads of this backend's pool.")
    queue: int = Field(
        default=0, ge=0, description="Calls waiting for a thread; beyond it calls get 503."
    )
    timeout: Duration = Field(default=2.0, description="Default per-call timeout.")


class ComputeBackend(Model):
    """A CPU-bound, picklable function run on the shared process pool (see backends/compute)."""

    kind: Literal["compute"]
    target: ImportPath = Field(description="A module-level function, called with `args`.")
    timeout: Duration = Field(default=2.0, description="Default per-call timeout.")


class PoolSpec(Model):
    """Connection pool limits of a postgres backend."""

    min: int = Field(default=2, ge=0, description="Connections opened at start-up and kept.")
    max: int = Field(default=20, ge=1, description="Most connections open at once.")
    acquire_timeout: Duration = Field(
        default=1.0, description="Wait at most this long for a free connection, then 503."
    )

    @model_validator(mode="after")
    def _min_not_above_max(self) -> PoolSpec:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not be larger than max ({self.max})")
        return self


def _check_dsn(dsn: str) -> str:
    if dsn.strip() == "${DATABASE_URL}":
        return dsn.strip()
    if "${" in dsn:
        raise ValueError("only a dsn of exactly ${DATABASE_URL} is expanded from the environment")
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise ValueError("a dsn is a postgresql:// URL or ${DATABASE_URL}")
    return dsn


Dsn = Annotated[str, BeforeValidator(lambda v: _check_dsn(v) if isinstance(v, str) else v)]


class PostgresBackend(Model):
    """A PostgreSQL database through one asyncpg pool; its calls run SQL from this file."""

    kind: Literal["postgres"]
    dsn: Dsn = Field(
        description="postgresql:// URL, or ${DATABASE_URL} (unset: the embedded demo database)."
    )
    pool: PoolSpec = Field(default_factory=PoolSpec)
    statement_cache_size: int = Field(
        default=100, ge=0, description="Prepared statements cached per connection; 0 for pgbouncer."
    )
    timeout: Duration = Field(default=2.0, description="Default per-call timeout.")


Backend = Annotated[
    HttpBackend | LegacyBackend | ComputeBackend | PostgresBackend, Field(discriminator="kind")
]


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
    target: str | None = Field(default=None, description="Take this (dotted) field first.")
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


class ProxySpec(Model):
    """A passthrough route: method, body, status and headers streamed both ways."""

    backend: str
    path: str = Field(description="Upstream path template, e.g. /{rest}.")
    timeout: Duration | None = Field(
        default=None, description="Connect and idle-read timeout; defaults to the backend's."
    )


class EndpointSpec(Model):
    """A route of the gateway: either an aggregation of `calls` or a `proxy`."""

    path: str = Field(pattern=r"^/")
    method: HttpMethod = "GET"
    timeout: Duration = Field(default=5.0, description="Deadline for the whole endpoint.")
    forward_query: list[str] = Field(default_factory=list)
    forward_headers: list[str] = Field(default_factory=list)
    error_details: bool = False
    max_body: ByteSize | None = Field(
        default=None, description="Request body limit; defaults to the process setting (1 MiB)."
    )
    calls: list[CallSpec] = Field(default_factory=list)
    proxy: ProxySpec | None = None

    @model_validator(mode="after")
    def _name_calls(self) -> EndpointSpec:
        named = [
            call if call.name else call.model_copy(update={"name": call.group or f"call{index}"})
            for index, call in enumerate(self.calls)
        ]
        object.__setattr__(self, "calls", named)
        return self


class GatewaySpec(Model):
    """The whole config file."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"title": "fanout gateway config"},
    )

    version: Literal[1]
    backends: dict[str, Backend] = Field(default_factory=dict)
    endpoints: list[EndpointSpec] = Field(default_factory=list)


Problem = tuple[str, str]
"""(location like `endpoints[2].calls[0].backend`, why)."""


def path_params(path: str) -> list[str]:
    """Names of the `{param}` / `{param:convertor}` placeholders of a route path."""
    return [m.split(":")[0] for m in re.findall(r"\{([^{}]+)\}", path)]


def check_references(spec: GatewaySpec) -> list[Problem]:
    """Every cross-field problem of a parsed config, each with its exact location."""
    problems: list[Problem] = []
    known = ", ".join(sorted(spec.backends)) or "none"
    seen_routes: dict[tuple[str, str], int] = {}
    problems += _check_targets(spec)
    for e_index, endpoint in enumerate(spec.endpoints):
        where = f"endpoints[{e_index}]"
        route = (endpoint.method, re.sub(r"\{[^{}]+\}", "{}", endpoint.path))
        if route in seen_routes:
            problems.append(
                (
                    f"{where}.path",
                    f"same route as endpoints[{seen_routes[route]}] ({endpoint.method})",
                )
            )
        seen_routes.setdefault(route, e_index)
        params = path_params(endpoint.path)
        for name in endpoint.forward_headers:
            if name.lower() in HOP_BY_HOP:
                problems.append((f"{where}.forward_headers", f"{name!r} is hop-by-hop"))
        if bool(endpoint.calls) == (endpoint.proxy is not None):
            problems.append((where, "give either `calls` or `proxy`, not both and not neither"))
        if endpoint.proxy is not None:
            problems += _check_proxy(spec, endpoint.proxy, params, f"{where}.proxy", known)
        names = [c.name or "" for c in endpoint.calls]
        for c_index, call in enumerate(endpoint.calls):
            problems += _check_call(spec, call, names, params, f"{where}.calls[{c_index}]", known)
        problems += _check_cycles(endpoint, where)
    return problems


def _check_proxy(
    spec: GatewaySpec, proxy: ProxySpec, params: list[str], where: str, known: str
) -> list[Problem]:
    if proxy.backend not in spec.backends:
        return [(f"{where}.backend", f"unknown backend {proxy.backend!r} (known: {known})")]
    if spec.backends[proxy.backend].kind != "http":
        return [(f"{where}.backend", f"a proxy needs an http backend, {proxy.backend!r} is not")]
    template, problems = _parse(proxy.path, f"{where}.path")
    for ref in template.refs if template else ():
        if ref.source != "path" or ref.key not in params:
            problems.append((f"{where}.path", f"{ref} is not a path parameter of this endpoint"))
    return problems


def _check_call(
    spec: GatewaySpec, call: CallSpec, names: list[str], params: list[str], where: str, known: str
) -> list[Problem]:
    problems: list[Problem] = []
    if call.backend not in spec.backends:
        problems.append((f"{where}.backend", f"unknown backend {call.backend!r} (known: {known})"))
    if names.count(call.name or "") > 1:
        problems.append((f"{where}.name", f"duplicate call name {call.name!r}"))
    for need in call.needs:
        if need == call.name:
            problems.append((f"{where}.needs", f"call {need!r} cannot need itself"))
        elif need not in names:
            problems.append(
                (f"{where}.needs", f"unknown call {need!r} (calls: {', '.join(names)})")
            )
    problems += check_sql_call(spec, call, params, where, calls=len(names))
    if call.allow is not None and call.deny is not None:
        problems.append((where, "give `allow` or `deny`, not both"))
    for old in call.rename:
        if "." in old:
            problems.append(
                (f"{where}.rename", f"{old!r}: rename applies to top-level fields only")
            )
    templates = [("path", call.path)]
    templates += [(f"query.{k}", v) for k, v in call.query.items()]
    templates += [(f"headers.{k}", v) for k, v in call.headers.items()]
    templates += [(f"args.{k}", v) for k, v in call.args.items()]
    problems += _check_call_kind(spec.backends.get(call.backend), call, where)
    for field_name, text in templates:
        template, found = _parse(text, f"{where}.{field_name}")
        problems += found
        for ref in template.refs if template else ():
            problems += _check_ref(ref, call, params, f"{where}.{field_name}")
    return problems


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_HTTP_CALL_FIELDS = ("path", "query", "headers")


def _check_targets(spec: GatewaySpec) -> list[Problem]:
    """Legacy and compute targets import, and a compute target can travel to a worker."""
    problems: list[Problem] = []
    for name, backend in spec.backends.items():
        if backend.kind not in ("legacy", "compute"):
            continue
        where = f"backends.{name}.target"
        try:
            target = resolve(backend.target)
        except TargetError as exc:
            problems.append((where, str(exc)))
            continue
        if backend.kind == "compute" and not picklable_function(target):
            problems.append((where, "must be a module-level function (workers import it by name)"))
    return problems


def _check_call_kind(backend: Backend | None, call: CallSpec, where: str) -> list[Problem]:
    """The fields a call may use depend on its backend's kind."""
    if backend is None:
        return []
    if backend.kind == "http":
        problems: list[Problem] = []
        if call.method.upper() not in HTTP_METHODS:
            expected = ", ".join(f"'{m}'" for m in HTTP_METHODS[:-1])
            problems.append((f"{where}.method", f"Input should be {expected} or 'OPTIONS'"))
        if call.args:
            problems.append((f"{where}.args", "`args` is for legacy and compute backends"))
        return problems
    if backend.kind not in ("legacy", "compute"):
        return []
    given = call.model_fields_set
    problems = [
        (f"{where}.{name}", f"not used by a {backend.kind} backend: pass values in `args`")
        for name in _HTTP_CALL_FIELDS
        if name in given
    ]
    try:
        target = resolve(backend.target)
    except TargetError:
        return problems  # reported once, at the backend
    if backend.kind == "legacy" and is_class(target):
        if "method" not in given:
            problems.append((where, f"name the {target.__name__} method to call in `method`"))
        elif not has_method(target, call.method):
            problems.append((f"{where}.method", f"{target.__name__} has no method {call.method!r}"))
    elif "method" in given:
        problems.append((f"{where}.method", f"{backend.target!r} is a function: no `method`"))
    return problems


def _check_ref(ref: Ref, call: CallSpec, params: list[str], where: str) -> list[Problem]:
    if ref.source == "path" and ref.key not in params:
        return [(where, f"{ref}: the endpoint path has no parameter {ref.key!r}")]
    if ref.source == "calls" and ref.key not in call.needs:
        return [(where, f"{ref}: add {ref.key!r} to `needs` to use its result")]
    return []


def _parse(text: str, where: str) -> tuple[Template | None, list[Problem]]:
    try:
        return parse_template(text), []
    except TemplateSyntaxError as exc:
        return None, [(where, str(exc))]


def _check_cycles(endpoint: EndpointSpec, where: str) -> list[Problem]:
    graph = {call.name or "": [n for n in call.needs if n != call.name] for call in endpoint.calls}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*trail, node, nxt]
            if nxt in graph and state.get(nxt) is None:
                cycle = visit(nxt, [*trail, node])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for name in graph:
        if state.get(name) is None:
            cycle = visit(name, [])
            if cycle:
                start = cycle.index(cycle[-1])
                return [(f"{where}.calls", "`needs` cycle: " + " -> ".join(cycle[start:]))]
    return []
