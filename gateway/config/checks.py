"""Cross-reference checks of a parsed config: every rule that needs more than one field.

A call names a known backend and sets only the fields its kind takes, `needs` names calls of
the same endpoint and has no cycle, a template reads only what it can (a path parameter the
endpoint has, a call it needs), two endpoints never share a route; collections (`for_each`,
`join`, `shape:`, `*` paths) are checked in `gateway.config.collections`. Each backend's kind adds
its own checks (`BackendKind.check`, `check_call`). Every problem comes with its exact
location, so `gateway check` can list them all at once.
"""

from __future__ import annotations

import re

from gateway.backends.registry import KIND_FIELDS, BackendKind, kind_of, kinds
from gateway.config.collections import check_collections, implied_needs
from gateway.config.document import GatewaySpec
from gateway.config.edge_checks import check_edge
from gateway.config.models import BackendSpec, CallSpec, EndpointSpec, Problem, ProxySpec
from gateway.config.refs import RefScope, check_template
from gateway.config.values import BODYLESS_METHODS, HEADER_NAME, HOP_BY_HOP, NOT_IN_HEADERS
from gateway.config.writes import check_writes
from gateway.engine.bodies import body_texts
from gateway.errors import ConfigError


def path_params(path: str) -> list[str]:
    """Names of the `{param}` / `{param:convertor}` placeholders of a route path."""
    return [m.split(":")[0] for m in re.findall(r"\{([^{}]+)\}", path)]


def check_references(spec: GatewaySpec) -> list[Problem]:
    """Every cross-field problem of a parsed config, each with its exact location."""
    problems: list[Problem] = []
    known = ", ".join(sorted(spec.backends)) or "none"
    seen_routes: dict[tuple[str, str], int] = {}
    for name, backend in spec.backends.items():
        problems += kind_of(backend).check(name, backend)
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
            if endpoint.cache_control is not None:
                problems.append(
                    (f"{where}.cache_control", "a passthrough sends its upstream's own headers")
                )
        names = [c.name or "" for c in endpoint.calls]
        has_body = endpoint.method not in BODYLESS_METHODS
        for c_index, call in enumerate(endpoint.calls):
            needs = (*call.needs, *implied_needs(call))
            scope = RefScope(
                tuple(params),
                needs,
                len(names),
                for_each=call.for_each is not None,
                has_body=has_body,
            )
            problems += _check_call(spec, call, names, scope, f"{where}.calls[{c_index}]", known)
        problems += check_collections(endpoint, where)
        problems += _check_cycles(endpoint, where)
        problems += check_writes(endpoint, where)
    problems += check_edge(spec)  # auth, cors, rate limits (gateway/config/edge_checks.py)
    return problems


def _check_proxy(
    spec: GatewaySpec, proxy: ProxySpec, params: list[str], where: str, known: str
) -> list[Problem]:
    backend = spec.backends.get(proxy.backend)
    if backend is None:
        return [(f"{where}.backend", f"unknown backend {proxy.backend!r} (known: {known})")]
    if not kind_of(backend).passthrough:
        able = " or ".join(kind.name for kind in kinds() if kind.passthrough)
        return [(f"{where}.backend", f"a proxy needs {_a(able)} backend, {proxy.backend!r} is not")]
    template, problems = check_template(proxy.path, RefScope(tuple(params), (), 0), f"{where}.path")
    for ref in template.refs if template else ():
        if ref.source != "path":
            problems.append((f"{where}.path", f"{ref} is not a path parameter of this endpoint"))
    return problems


def _check_call(
    spec: GatewaySpec, call: CallSpec, names: list[str], scope: RefScope, where: str, known: str
) -> list[Problem]:
    problems: list[Problem] = []
    backend = spec.backends.get(call.backend)
    if backend is None:
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
    templates += list(body_texts(call.body))
    for field_name, text in templates:
        problems += check_template(text, scope, f"{where}.{field_name}")[1]
    for key, text in call.headers.items():
        if not HEADER_NAME.match(key):
            problems.append((f"{where}.headers", f"{key!r} is not a header name"))
        if NOT_IN_HEADERS.search(text):
            problems.append((f"{where}.headers.{key}", "a header cannot carry control characters"))
    if backend is not None:
        kind = kind_of(backend)
        problems += _unused_fields(kind, call, where)
        problems += kind.check_call(backend, call, where, scope)
        if call.cache is not None and not _idempotent(kind, backend, call):
            problems.append(
                (f"{where}.cache", "only idempotent calls are cached (add `idempotent: true`)")
            )
    return problems


def _idempotent(kind: BackendKind, backend: BackendSpec, call: CallSpec) -> bool:
    if call.idempotent is not None:
        return call.idempotent
    try:
        return kind.traits(backend, call).idempotent_by_default
    except ConfigError:
        return True  # a template that does not parse: reported once, by the kind's checks


def _unused_fields(kind: BackendKind, call: CallSpec, where: str) -> list[Problem]:
    """A kind-specific field set on a call whose backend's kind does not take it."""
    problems: list[Problem] = []
    for name in KIND_FIELDS:
        if name in call.model_fields_set and name not in kind.call_fields:
            takers = " and ".join(k.name for k in kinds() if name in k.call_fields)
            problems.append(
                (
                    f"{where}.{name}",
                    f"not used by {_a(kind.name)} {kind.name} backend ({call.backend!r}): "
                    f"only {takers} backends' calls take `{name}`",
                )
            )
    return problems


def _a(word: str) -> str:
    """The indefinite article for `word`, as it is read aloud (an http, a postgres)."""
    return "an" if word[:1].lower() in "aeiou" or word.lower().startswith("http") else "a"


def _check_cycles(endpoint: EndpointSpec, where: str) -> list[Problem]:
    graph = {
        call.name or "": [n for n in (*call.needs, *implied_needs(call)) if n != call.name]
        for call in endpoint.calls
    }
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
