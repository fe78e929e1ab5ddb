"""SQL calls without a database: their config checks and their bind parameters.

SQL comes only from the config file and request values reach it only as bind parameters.
A parameter is a template (`{id:int}`, `{query.since:date}`, `{calls.user.id}`, `%{query.q}%`).
The client's values arrive as text and are converted to the named type; a value that does
not convert is the client's mistake (400 naming the parameter), checked before any call runs.
A value read from another call's result that does not convert fails that call instead.
A `{query.x}` or `{header.x}` the client did not send binds NULL, so the SQL can default it
(`COALESCE($2, 20)`). Values only ever travel as bind parameters, never into the SQL text.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from gateway.config.models import CallSpec, Problem
from gateway.config.refs import RefScope, check_ref, list_problem
from gateway.engine.templates import (
    Sources,
    Template,
    as_text,
    is_absent,
    lookup_scalar,
    parse_template,
    render_text,
)
from gateway.errors import BadRequest, MissingValue, TemplateSyntaxError

ResultKind = Literal["one", "many", "value", "stream"]

PARAM_TYPES = ("int", "float", "str", "bool", "uuid", "date", "datetime")
"""Type suffixes a bind parameter may carry: `{id:int}`. Without one the value is a string."""

_PLACEHOLDER = re.compile(r"\$(\d+)")


@dataclass(frozen=True, slots=True)
class SqlArguments:
    """A call's statement, its parameter templates and the shape of its result: rendered
    into `BackendRequest.args` as `{"sql", "params", "result"}`."""

    sql: str
    params: tuple[Template, ...]
    result: ResultKind

    def render(self, sources: Sources) -> Mapping[str, Any]:
        return {"sql": self.sql, "params": bind(self.params, sources), "result": self.result}

    def check(self, sources: Sources) -> None:
        """Convert every client-supplied parameter now, so a bad one is a 400 before any call."""
        bind([p for p in self.params if all(r.from_client for r in p.refs)], sources)


def _to_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError("not a boolean (use true or false)")


def _to_int(text: str) -> int:
    stripped = text.strip()
    if not stripped.lstrip("+-").isascii() or not stripped.lstrip("+-").isdigit():
        raise ValueError("not an integer")
    number = int(stripped)
    if not -(2**63) <= number < 2**63:
        raise ValueError("out of the 64-bit integer range")
    return number


def _to_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


CONVERTERS: dict[str, Callable[[str], Any]] = {
    "int": _to_int,
    "float": _to_float,
    "str": str,
    "bool": _to_bool,
    "uuid": uuid.UUID,
    "date": date.fromisoformat,
    "datetime": datetime.fromisoformat,
}
"""Text -> the Python value asyncpg binds, per type suffix (see `PARAM_TYPES`)."""


def convert(type_name: str | None, value: Any) -> Any:
    """`value` as the type `type_name` names; ValueError when it is not one."""
    if type_name is None or type_name == "str":
        return as_text(value)
    if type_name == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if type_name == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if type_name == "bool" and isinstance(value, bool):
        return value
    try:
        return CONVERTERS[type_name](as_text(value))
    except (ValueError, TypeError, OverflowError):
        raise ValueError(f"not a valid {type_name}") from None


def bind(params: Iterable[Template], sources: Sources) -> tuple[Any, ...]:
    """The bind values, in order. BadRequest for a bad client value, MissingValue otherwise."""
    bound: list[Any] = []
    for template in params:
        ref = template.single_ref
        if ref is None:
            bound.append(render_text(template, sources, str))
            continue
        if is_absent(ref, sources):
            bound.append(None)
            continue
        name = str(ref).strip("{}").split(":")[0]
        try:
            raw = lookup_scalar(ref, sources)
        except MissingValue:
            if not ref.from_client:
                raise
            # present (not absent) but an object or a list: a client's JSON body sent it
            raise BadRequest(f"parameter {name!r} is not a single value") from None
        try:
            bound.append(convert(ref.type_name, raw))
        except ValueError as exc:
            if not ref.from_client:
                raise MissingValue(f"{name}: {exc}") from None
            raise BadRequest(f"parameter {name!r} is {exc}: {as_text(raw)[:100]!r}") from None
    return tuple(bound)


def sql_arguments(call: CallSpec) -> SqlArguments:
    """The arguments of a (checked) SQL call."""
    return SqlArguments(
        call.sql or "", tuple(parse_template(p) for p in call.params), call.result or "many"
    )


def check_sql_call(call: CallSpec, where: str, scope: RefScope) -> list[Problem]:
    """Problems of one call to a postgres backend: its statement, parameters and result."""
    if not call.sql or not call.sql.strip():
        return [(f"{where}.sql", "a call to a postgres backend needs `sql`")]
    problems: list[Problem] = []
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
        problems += _check_param(text, scope, f"{where}.params[{index}]")
    if call.result == "stream" and scope.calls > 1:
        problems.append((f"{where}.result", "a `stream` call must be the endpoint's only call"))
    if call.result == "stream" and call.needs:
        problems.append((f"{where}.needs", "a `stream` call cannot need other calls"))
    return problems


def _check_param(text: str, scope: RefScope, where: str) -> list[Problem]:
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
        problems += check_ref(ref, scope, where) + list_problem(ref, where)
    return problems
