"""From config to plan, once at start-up; from plan + client request to backend requests, per call.

`plan_endpoint` pushes every default down (a call's timeout falls back to its backend's, names
are resolved, templates parsed) so request handling only reads frozen values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from starlette.requests import Request

from gateway.errors import BadBody, BadRequest
from gateway.merge import Shape, dotted
from gateway.policies.resolve import CallPolicies, resolve_policies
from gateway.spec import Backend, CallSpec, EndpointSpec
from gateway.sql_params import SqlPlan
from gateway.templates import MissingValue, RequestValues, Template, parse_template, render
from gateway.types import BackendRequest

# RFC 3986 `pchar` minus `/`: everything a single path segment may carry unencoded.
SEGMENT_SAFE = "!$&'()*+,;=:@~-._"
DOT_SEGMENTS = frozenset({".", ".."})


@dataclass(frozen=True, slots=True)
class CallPlan:
    """One call with every default resolved and every template parsed."""

    name: str
    backend: str
    method: str
    path: Template
    query: tuple[tuple[str, Template], ...]
    headers: tuple[tuple[str, Template], ...]
    args: tuple[tuple[str, Template], ...]
    needs: tuple[str, ...]
    required: bool
    timeout: float
    shape: Shape
    policies: CallPolicies  # retry, hedge, coalesce, per-try timeout (gateway/policies)
    sql: SqlPlan | None = None  # calls to postgres backends


@dataclass(frozen=True, slots=True)
class EndpointPlan:
    """An aggregation endpoint, ready to serve."""

    path: str
    method: str
    timeout: float
    forward_query: tuple[str, ...]
    forward_headers: tuple[str, ...]
    error_details: bool
    calls: tuple[CallPlan, ...]


def plan_endpoint(endpoint: EndpointSpec, backends: Mapping[str, Backend]) -> EndpointPlan:
    """Resolve an endpoint of a validated spec (see `check_references`)."""
    return EndpointPlan(
        path=endpoint.path,
        method=endpoint.method,
        timeout=endpoint.timeout,
        forward_query=tuple(endpoint.forward_query),
        forward_headers=tuple(h.lower() for h in endpoint.forward_headers),
        error_details=endpoint.error_details,
        calls=tuple(_plan_call(call, backends[call.backend]) for call in endpoint.calls),
    )


def _plan_call(call: CallSpec, backend: Backend) -> CallPlan:
    name = call.name or ""
    return CallPlan(
        name=name,
        backend=call.backend,
        # an http method is case-insensitive; a legacy method is a Python name, kept as it is
        method=call.method.upper() if backend.kind == "http" else call.method,
        path=parse_template(call.path),
        query=tuple((k, parse_template(v)) for k, v in call.query.items()),
        headers=tuple((k.lower(), parse_template(v)) for k, v in call.headers.items()),
        args=tuple((k, parse_template(v)) for k, v in call.args.items()),
        needs=tuple(call.needs),
        required=call.required,
        timeout=call.timeout if call.timeout is not None else backend.timeout,
        shape=Shape(
            name=name,
            target=dotted(call.target),
            allow=tuple(dotted(p) for p in call.allow) if call.allow is not None else None,
            deny=tuple(dotted(p) for p in call.deny or ()),
            rename=tuple(call.rename.items()),
            group=call.group,
        ),
        policies=resolve_policies(call, backend),
        sql=(
            SqlPlan(call.sql, tuple(parse_template(p) for p in call.params), call.result or "many")
            if call.sql is not None
            else None
        ),
    )


def has_dot_segment(decoded: str) -> bool:
    """True when a decoded value holds a `.` or `..` segment, split on `/` or `\\`.

    Such a value stays one encoded segment on the wire, but an upstream that decodes
    `%2F` or treats backslashes as separators would climb its path tree with it.
    """
    return any(part in DOT_SEGMENTS for part in decoded.replace("\\", "/").split("/"))


def reject_dot_segments(path_params: Mapping[str, str]) -> None:
    """A path parameter that could climb the upstream path is refused (400)."""
    for name, value in path_params.items():
        if has_dot_segment(value):
            raise BadRequest(f"path parameter {name!r} must not contain '.' or '..' segments")


def request_values(request: Request) -> RequestValues:
    """What the templates of a call may read from a client request (no call results yet).

    Raises BadRequest (-> 400) for a path parameter that could climb the upstream path.
    """
    reject_dot_segments(request.path_params)
    return RequestValues(
        path=request.path_params,
        query=dict(request.query_params),
        headers=dict(request.headers),
        results={},
    )


def encode_segment(value: str) -> str:
    """Percent-encode a value as exactly one path segment (`/`, `%`, `\\`, controls encoded)."""
    if has_dot_segment(value):
        raise MissingValue(f"{value!r} cannot be a path segment")
    return quote(value, safe=SEGMENT_SAFE)


def render_request(
    call: CallPlan,
    values: RequestValues,
    forwarded_query: tuple[tuple[str, str], ...],
    forwarded_headers: tuple[tuple[str, str], ...],
) -> BackendRequest:
    """The backend request for one call; BadBody when a `{calls...}` value is missing."""
    try:
        path = render(call.path, values, encode_segment)
        query = _render_pairs(call.query, values)
        headers = _render_pairs(call.headers, values)
        args = _render_pairs(call.args, values)
        sql_args = call.sql.args(values) if call.sql is not None else None  # postgres calls
    except MissingValue as exc:
        raise BadBody(f"cannot build the request: {exc}") from None
    own_query = {k for k, _ in query}
    own_headers = {k for k, _ in headers}
    return BackendRequest(
        method=call.method,
        path=path,
        query=query + tuple((k, v) for k, v in forwarded_query if k not in own_query),
        headers=headers + tuple((k, v) for k, v in forwarded_headers if k not in own_headers),
        args=sql_args if sql_args is not None else dict(args),
    )


def _render_pairs(
    pairs: tuple[tuple[str, Template], ...], values: RequestValues
) -> tuple[tuple[str, str], ...]:
    out = []
    for key, template in pairs:
        ref = template.single_ref
        # a value that is exactly one absent request field is left out rather than sent empty
        if ref is not None and ref.source in ("query", "header"):
            source = values.query if ref.source == "query" else values.headers
            if ref.key not in source:
                continue
        out.append((key, render(template, values, str)))
    return tuple(out)
