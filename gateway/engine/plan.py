"""From config to plan, once at start-up; from plan + request context to backend requests.

`plan_endpoint` pushes every default down (a call's timeout falls back to its backend's,
names are resolved, templates parsed, policies resolved) so request handling only reads
frozen values. What depends on a backend's kind (how its method reads, its `args`, whether
it may be repeated) comes in as `CallTraits`, made by that kind (gateway/backends): the
engine never asks which kind a backend is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from gateway.config.models import NO_RESILIENCE, BackendSpec, CallSpec, EndpointSpec, ResilienceSpec
from gateway.config.values import NOT_IN_HEADERS
from gateway.engine.bodies import Body, ForwardBody, plan_body, reads_body
from gateway.engine.context import RawBody, RequestContext
from gateway.engine.foreach import ForEach
from gateway.engine.merge import Shape, dotted
from gateway.engine.paths import Path, parse_path
from gateway.engine.shape import Shaping, plan_shaping
from gateway.engine.templates import (
    Ref,
    Sources,
    Template,
    as_text,
    is_absent,
    lookup,
    parse_template,
    render_text,
)
from gateway.errors import BadRequest, MissingValue, UnsafeValue
from gateway.policies.resolve import CallPolicies, resolve_policies
from gateway.types import BackendRequest

# RFC 3986 `pchar` minus `/`: everything a single path segment may carry unencoded.
SEGMENT_SAFE = "!$&'()*+,;=:@~-._"
DOT_SEGMENTS = frozenset({".", ".."})


class Arguments(Protocol):
    """How a call turns request values into `BackendRequest.args` (each kind has its own)."""

    def render(self, sources: Sources) -> Mapping[str, Any]:
        """The arguments of one call; MissingValue when a value it needs is absent."""
        ...

    def check(self, sources: Sources) -> None:
        """Check the client's values before any call runs; BadRequest for a bad one."""
        ...


@dataclass(frozen=True, slots=True)
class TextArguments:
    """`args` as text templates (legacy and compute calls): a value that is exactly one
    absent query parameter or header is left out rather than sent empty."""

    pairs: tuple[tuple[str, Template], ...]

    def render(self, sources: Sources) -> Mapping[str, Any]:
        return dict(render_pairs(self.pairs, sources))

    def check(self, sources: Sources) -> None:
        return None


NO_ARGUMENTS = TextArguments(())


@dataclass(frozen=True, slots=True)
class CallTraits:
    """What a backend's kind says about one call to it (see `BackendKind.traits`)."""

    method: str
    arguments: Arguments = NO_ARGUMENTS
    idempotent_by_default: bool = False
    resilience: ResilienceSpec = NO_RESILIENCE
    streams: bool = False
    """The call's rows are streamed to the client (an endpoint's only call)."""
    attributes: Mapping[str, str] = field(default_factory=dict)
    """What the kind says of the call for its trace spans and the status page (an HTTP
    path template, an SQL operation): fixed text from the config, never request values."""


TraitsOf = Callable[[BackendSpec, CallSpec], CallTraits]


@dataclass(frozen=True, slots=True)
class CallPlan:
    """One call with every default resolved and every template parsed."""

    name: str
    backend: str
    method: str
    path: Template
    query: tuple[tuple[str, Template], ...]
    headers: tuple[tuple[str, Template], ...]
    arguments: Arguments
    needs: tuple[str, ...]
    required: bool
    timeout: float
    shape: Shape
    policies: CallPolicies  # retry, hedge, coalesce, per-try timeout (gateway/policies)
    streams: bool = False
    for_each: ForEach | None = None
    """The call runs once per element of this list (`for_each:`)."""
    join: Join | None = None
    shaping: Shaping = ()
    """The call's `shape:` operations (for a `for_each` call: of each element's result)."""

    body: Body | None = None
    """What the call sends: the client's body (`forward`), a JSON template, or nothing."""
    pass_errors: bool = False
    background: bool = False
    attributes: Mapping[str, str] = field(default_factory=dict)
    """The kind's description of the call (`CallTraits.attributes`)."""
    header_client_refs: tuple[Ref, ...] = ()
    """Refs to client values in this call's header templates (checked: no control chars)."""
    static: StaticParts | None = None
    """The path, query and headers rendered once at start-up, when none of their templates
    holds a ref (most calls): `render_request` then renders none of them per request."""

    @property
    def attached(self) -> bool:
        """True when the call's result goes inside another call's elements (`into`,
        `join`) instead of being merged itself."""
        return self.join is not None or (
            self.for_each is not None and self.for_each.into is not None
        )


StaticParts = tuple[str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]
"""A call's (path, query, headers) as `render_request` would render them."""


@dataclass(frozen=True, slots=True)
class Join:
    """A call's `join:`: its list's elements attached to the elements of `call`'s list at
    `path` whose field `on` equals their field `key`, under `attach_as`."""

    call: str
    path: Path
    on: Path
    key: Path
    attach_as: Path
    many: bool = False


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
    cache_control: str | None = None
    """Cache-Control of the endpoint's own complete answers (with ETag and 304)."""
    shaping: Shaping = ()
    """The endpoint's `shape:`, applied to the merged body last."""
    reads_json: bool = False
    """The client's body is parsed as JSON before any call: the endpoint has a `request`
    block, or a template reads `{body...}`."""

    @property
    def streams(self) -> bool:
        """True for an endpoint whose only call streams its result (NDJSON)."""
        return len(self.calls) == 1 and self.calls[0].streams

    @property
    def forwards(self) -> bool:
        """True when a call sends the client's body as it came (`body: forward`)."""
        return any(isinstance(call.body, ForwardBody) for call in self.calls)


def plan_endpoint(
    endpoint: EndpointSpec, backends: Mapping[str, BackendSpec], traits_of: TraitsOf
) -> EndpointPlan:
    """Resolve an endpoint of a validated spec (see `gateway.config.checks`)."""
    return EndpointPlan(
        path=endpoint.path,
        method=endpoint.method,
        timeout=endpoint.timeout,
        forward_query=tuple(endpoint.forward_query),
        forward_headers=tuple(h.lower() for h in endpoint.forward_headers),
        error_details=endpoint.error_details,
        calls=tuple(
            _plan_call(
                call,
                backends[call.backend],
                traits_of(backends[call.backend], call),
                f"{endpoint.method} {endpoint.path}",
            )
            for call in endpoint.calls
        ),
        cache_control=endpoint.cache_control,
        shaping=plan_shaping(endpoint.shape),
        reads_json=endpoint.request is not None or reads_body(endpoint.calls),
    )


def _plan_call(call: CallSpec, backend: BackendSpec, traits: CallTraits, place: str) -> CallPlan:
    name = call.name or ""
    for_each = _plan_for_each(call)
    join = _plan_join(call)
    implied = [c for c in (for_each and for_each.source, join and join.call) if c]
    headers = tuple((k.lower(), parse_template(v)) for k, v in call.headers.items())
    call_path = parse_template(call.path)
    query = tuple((k, parse_template(v)) for k, v in call.query.items())
    return CallPlan(
        name=name,
        backend=call.backend,
        method=traits.method,
        path=call_path,
        query=query,
        headers=headers,
        arguments=traits.arguments,
        needs=tuple(dict.fromkeys([*call.needs, *implied])),
        required=call.required,
        timeout=call.timeout if call.timeout is not None else backend.timeout,
        shape=Shape(
            name=name,
            pick=dotted(call.pick),
            allow=tuple(dotted(p) for p in call.allow) if call.allow is not None else None,
            deny=tuple(dotted(p) for p in call.deny or ()),
            rename=tuple(call.rename.items()),
            group=call.group,
        ),
        policies=resolve_policies(
            call,
            timeout=backend.timeout,
            idempotent_by_default=traits.idempotent_by_default,
            resilience=traits.resilience,
            place=place,
        ),
        streams=traits.streams,
        body=plan_body(call.body),
        pass_errors=call.pass_errors,
        background=call.background,
        for_each=for_each,
        join=join,
        shaping=plan_shaping(call.shape),
        attributes=traits.attributes,
        header_client_refs=tuple(
            ref for _, template in headers for ref in template.refs if ref.from_client
        ),
        static=_static_parts(call_path, query, headers),
    )


def _static_parts(
    path: Template,
    query: tuple[tuple[str, Template], ...],
    headers: tuple[tuple[str, Template], ...],
) -> StaticParts | None:
    """The parts `render_request` renders, when they read nothing (and their header values
    are fit to send: else every request fails to build the call, as it would rendered)."""
    templates = [path, *(t for _, t in query), *(t for _, t in headers)]
    if not all(template.is_static for template in templates):
        return None
    rendered = render_pairs(headers, {})
    if any(NOT_IN_HEADERS.search(value) for _, value in rendered):
        return None
    return render_text(path, {}, encode_segment), render_pairs(query, {}), rendered


def _plan_for_each(call: CallSpec) -> ForEach | None:
    if call.for_each is None:
        return None
    _, source, *path = call.for_each.split(".")  # checked: calls.<name>[.path]
    return ForEach(
        source=source,
        path=tuple(path),
        into=parse_path(call.into) if call.into else None,
        concurrency=call.concurrency,
        max_items=call.max_items,
    )


def _plan_join(call: CallSpec) -> Join | None:
    if call.join is None:
        return None
    target, *path = call.join.into.split(".")
    return Join(
        call=target,
        path=tuple(path),
        on=parse_path(call.join.on),
        key=parse_path(call.join.key),
        attach_as=parse_path(call.join.attach_as),
        many=call.join.many,
    )


def has_dot_segment(decoded: str) -> bool:
    """True when a decoded value holds a `.` or `..` segment, split on `/` or `\\`.

    Such a value stays one encoded segment on the wire, but an upstream that decodes
    `%2F` or treats backslashes as separators would climb its path tree with it.
    """
    return any(part in DOT_SEGMENTS for part in decoded.replace("\\", "/").split("/"))


def check_request(plan: EndpointPlan, context: RequestContext) -> None:
    """Refuse (BadRequest -> 400) what no call of the endpoint can be built from: a path
    parameter that could climb the upstream path, a client value its type refuses, a client
    value with control characters that a call would put into a header."""
    for name, value in context.path.items():
        if isinstance(value, str) and has_dot_segment(value):
            raise BadRequest(f"path parameter {name!r} must not contain '.' or '..' segments")
    for call in plan.calls:
        call.arguments.check(context.sources)
        for ref in call.header_client_refs:
            if is_absent(ref, context.sources):
                continue
            try:
                value = lookup(ref, context.sources)
            except MissingValue:
                continue  # the call fails on it when it is built, as any missing value
            if isinstance(value, str | int | float | bool) and NOT_IN_HEADERS.search(
                as_text(value)
            ):
                raise BadRequest(f"{_named(ref)} must not contain control characters")


def _named(ref: Ref) -> str:
    """How a 400 names the client value a ref reads."""
    kind = {"path": "path parameter", "query": "query parameter", "header": "header"}
    return f"{kind[ref.source]} {ref.key!r}" if ref.source in kind else str(ref)


def encode_segment(value: str) -> str:
    """Percent-encode a value as exactly one path segment (`/`, `%`, `\\`, controls encoded)."""
    if has_dot_segment(value):
        raise MissingValue(f"{value!r} cannot be a path segment")
    return quote(value, safe=SEGMENT_SAFE)


def render_request(
    call: CallPlan,
    sources: Sources,
    forwarded_query: tuple[tuple[str, str], ...],
    forwarded_headers: tuple[tuple[str, str], ...],
    deadline: float | None = None,
    identity: str = "",
    client_body: RawBody | None = None,
) -> BackendRequest:
    """The backend request for one call; MissingValue when a value it needs is absent.

    `client_body` is the client's body as it came, for a `body: forward` call.
    """
    body: bytes | None = None
    content_type: str | None = None
    static = call.static
    try:
        if static is not None:
            path, query, headers = static
        else:
            path = render_text(call.path, sources, encode_segment)
            query = render_pairs(call.query, sources)
            headers = render_pairs(call.headers, sources)
        args = call.arguments.render(sources)
        if call.body is not None:
            body, content_type = call.body.render(sources, client_body)
    except MissingValue as exc:
        raise MissingValue(f"cannot build the request: {exc}") from None
    if static is None:
        for key, value in headers:
            if NOT_IN_HEADERS.search(value):
                # client values were refused before any call (check_request): this one came
                # from an earlier call's result, and header injection fails the call, not
                # the request
                raise UnsafeValue(
                    f"cannot build the request: header {key!r} would carry control characters"
                )
    return BackendRequest(
        method=call.method,
        path=path,
        query=_with_forwarded(query, forwarded_query),
        headers=_with_forwarded(headers, forwarded_headers),
        args=args,
        deadline=deadline,
        identity=identity,
        body=body,
        content_type=content_type,
    )


def _with_forwarded(
    own: tuple[tuple[str, str], ...], forwarded: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    """The call's own pairs, then the forwarded ones whose names it does not set itself."""
    if not own or not forwarded:
        return own or forwarded
    names = {name for name, _ in own}
    return own + tuple(pair for pair in forwarded if pair[0] not in names)


def render_pairs(
    pairs: tuple[tuple[str, Template], ...], sources: Sources
) -> tuple[tuple[str, str], ...]:
    """Name/template pairs as text; a value that is exactly one absent client value (a query
    parameter or header the client did not send) is left out rather than sent empty."""
    out = []
    for key, template in pairs:
        ref = template.single_ref
        if ref is not None and is_absent(ref, sources):
            continue
        out.append((key, render_text(template, sources, str)))
    return tuple(out)
