"""Config checks of calls to postgres backends, run by `spec.check_references`.

SQL comes only from the config file and request values reach it only as bind parameters,
so what can be checked before serving is checked here: `sql` only on a postgres backend (and
always there), HTTP-only fields not set, every `$n` placeholder has a parameter, each
parameter is a template whose type suffix is known and whose refs exist, and `result: stream`
is an endpoint's only call.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from gateway.templates import TemplateSyntaxError, parse_template

if TYPE_CHECKING:
    from gateway.spec import CallSpec, GatewaySpec, Problem

PARAM_TYPES = ("int", "float", "str", "bool", "uuid", "date", "datetime")
"""Type suffixes a bind parameter may carry: `{id:int}`. Without one the value is a string."""

_PLACEHOLDER = re.compile(r"\$(\d+)")
_HTTP_ONLY = ("path", "query", "headers")


def check_sql_call(
    spec: GatewaySpec, call: CallSpec, path_params: list[str], where: str, *, calls: int
) -> list[Problem]:
    """Problems of one call as far as SQL is concerned (none for a call to an HTTP backend)."""
    backend = spec.backends.get(call.backend)
    is_postgres = backend is not None and backend.kind == "postgres"
    sql_fields = [f for f in ("sql", "params", "result") if f in call.model_fields_set]
    if not is_postgres:
        if backend is None:
            return []  # the unknown backend is reported by the caller
        return [(f"{where}.{f}", f"only a postgres backend's calls take `{f}`") for f in sql_fields]
    problems: list[Problem] = [
        (f"{where}.{f}", f"not used by a postgres backend ({call.backend!r})")
        for f in _HTTP_ONLY
        if f in call.model_fields_set
    ]
    if not call.sql or not call.sql.strip():
        return [*problems, (f"{where}.sql", "a call to a postgres backend needs `sql`")]
    used = {int(n) for n in _PLACEHOLDER.findall(call.sql)}
    highest = max(used, default=0)
    if highest > len(call.params):
        problems.append(
            (f"{where}.params", f"the sql uses ${highest} but {len(call.params)} params are given")
        )
    elif len(call.params) > highest:
        problems.append(
            (f"{where}.params", f"{len(call.params)} params given but the sql uses ${highest} last")
        )
    for index, text in enumerate(call.params):
        problems += _check_param(text, call, path_params, f"{where}.params[{index}]")
    if call.result == "stream" and calls > 1:
        problems.append((f"{where}.result", "a `stream` call must be the endpoint's only call"))
    if call.result == "stream" and call.needs:
        problems.append((f"{where}.needs", "a `stream` call cannot need other calls"))
    return problems


def _check_param(text: str, call: CallSpec, path_params: list[str], where: str) -> list[Problem]:
    try:
        template = parse_template(text)
    except TemplateSyntaxError as exc:
        return [(where, str(exc))]
    problems: list[Problem] = []
    for ref in template.refs:
        if ref.type_name is not None and ref.type_name not in PARAM_TYPES:
            problems.append(
                (where, f"{ref}: unknown type {ref.type_name!r} (use {', '.join(PARAM_TYPES)})")
            )
        if ref.type_name is not None and template.single_ref is None:
            problems.append((where, f"{ref}: a typed parameter must be the whole value"))
        if ref.source == "path" and ref.key not in path_params:
            problems.append((where, f"{ref}: the endpoint path has no parameter {ref.key!r}"))
        if ref.source == "calls" and ref.key not in call.needs:
            problems.append((where, f"{ref}: add {ref.key!r} to `needs` to use its result"))
    return problems
