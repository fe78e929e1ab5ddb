"""Bind parameters of SQL calls: typed conversion of request values, decided per request.

A parameter is a template (`{id:int}`, `{query.since:date}`, `{calls.user.id}`, `%{query.q}%`).
The client's values arrive as text and are converted to the named type; a value that does
not convert is the client's mistake (400 naming the parameter), checked before any call runs.
A value read from another call's result that does not convert fails that call instead.
A `{query.x}` or `{header.x}` the client did not send binds NULL, so the SQL can default it
(`COALESCE($2, 20)`). Values only ever travel as bind parameters, never into the SQL text.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from gateway.errors import BadRequest
from gateway.templates import MissingValue, RequestValues, Template, as_text, lookup, render

ResultKind = Literal["one", "many", "value", "stream"]


@dataclass(frozen=True, slots=True)
class SqlPlan:
    """A call's statement, its parameter templates and the shape of its result."""

    sql: str
    params: tuple[Template, ...]
    result: ResultKind

    def args(self, values: RequestValues) -> dict[str, Any]:
        """The `BackendRequest.args` of this call; MissingValue/BadRequest as `bind` raises."""
        return {"sql": self.sql, "params": bind(self.params, values), "result": self.result}


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
"""Text -> the Python value asyncpg binds, per type suffix (see sql_checks.PARAM_TYPES)."""


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


def bind(params: Iterable[Template], values: RequestValues) -> tuple[Any, ...]:
    """The bind values, in order. BadRequest for a bad client value, MissingValue otherwise."""
    bound: list[Any] = []
    for template in params:
        ref = template.single_ref
        if ref is None:
            bound.append(render(template, values, str))
            continue
        if ref.source in ("query", "header"):
            source = values.query if ref.source == "query" else values.headers
            if ref.key not in source:
                bound.append(None)
                continue
        raw = lookup(ref, values)
        try:
            bound.append(convert(ref.type_name, raw))
        except ValueError as exc:
            name = str(ref).strip("{}").split(":")[0]
            if ref.source == "calls":
                raise MissingValue(f"{name}: {exc}") from None
            raise BadRequest(f"parameter {name!r} is {exc}: {as_text(raw)[:100]!r}") from None
    return tuple(bound)


def check_request(plans: Iterable[SqlPlan | None], values: RequestValues) -> None:
    """Convert every client-supplied parameter now, so a bad one is a 400 before any call."""
    for plan in plans:
        if plan is None:
            continue
        client_side = [p for p in plan.params if all(r.source != "calls" for r in p.refs)]
        bind(client_side, values)
