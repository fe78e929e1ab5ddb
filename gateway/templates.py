"""Config templates: `{id}`, `{query.lang}`, `{header.accept-language}`, `{calls.product.x}`.

A template is parsed once at start-up into literal text and `Ref`s; rendering a request only
looks values up. `{{` and `}}` stand for literal braces. A ref may carry a type suffix
(`{id:int}`) used by backends that take typed arguments.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Source = Literal["path", "query", "header", "calls"]

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class TemplateSyntaxError(ValueError):
    """A template that cannot be parsed; the message says where and why."""


class MissingValue(LookupError):
    """A ref names a value the request or an earlier call does not have."""


@dataclass(frozen=True, slots=True)
class Ref:
    """One placeholder: where its value comes from, and an optional type name."""

    source: Source
    key: str
    field: tuple[str, ...] = ()
    type_name: str | None = None

    def __str__(self) -> str:
        dotted = ".".join(
            ((self.source,) if self.source != "path" else ()) + (self.key, *self.field)
        )
        return "{" + dotted + (f":{self.type_name}" if self.type_name else "") + "}"


@dataclass(frozen=True, slots=True)
class Template:
    """Parsed template text: literal strings and refs, in order."""

    parts: tuple[str | Ref, ...]
    refs: tuple[Ref, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "refs", tuple(p for p in self.parts if isinstance(p, Ref)))

    @property
    def single_ref(self) -> Ref | None:
        """The ref when the whole template is exactly one placeholder, else None."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Ref):
            return self.parts[0]
        return None


def parse_template(text: str) -> Template:
    """Parse `text`; raise TemplateSyntaxError naming the bad placeholder."""
    parts: list[str | Ref] = []
    literal: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        literal.append(text[pos : match.start()])
        pos = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
            continue
        if match.group(1) is None:
            raise TemplateSyntaxError(
                f"unbalanced {token!r} in {text!r} (use {token * 2} for a literal)"
            )
        if "".join(literal):
            parts.append("".join(literal))
        literal = []
        parts.append(_parse_ref(match.group(1)))
    literal.append(text[pos:])
    if "".join(literal):
        parts.append("".join(literal))
    return Template(tuple(parts))


def _parse_ref(body: str) -> Ref:
    expr, _, type_name = body.strip().partition(":")
    names = expr.split(".")
    if not all(_NAME.match(n) for n in names):
        raise TemplateSyntaxError(f"bad placeholder {{{body}}}")
    head, rest = names[0], names[1:]
    kind = type_name or None
    if head == "query" and len(rest) == 1:
        return Ref("query", rest[0], type_name=kind)
    if head == "header" and len(rest) == 1:
        return Ref("header", rest[0].lower(), type_name=kind)
    if head == "calls" and len(rest) >= 1:
        return Ref("calls", rest[0], tuple(rest[1:]), type_name=kind)
    if len(names) == 1:
        return Ref("path", head, type_name=kind)
    raise TemplateSyntaxError(
        f"bad placeholder {{{body}}}: "
        "use {param}, {query.x}, {header.x} or {calls.name.field}"
    )


@dataclass(frozen=True, slots=True)
class RequestValues:
    """What a template can read: the client request and the results of finished calls."""

    path: Mapping[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    results: Mapping[str, Any]


def lookup(ref: Ref, values: RequestValues) -> Any:
    """The value a ref points at; raise MissingValue when it is absent."""
    if ref.source == "calls":
        current: Any = values.results.get(ref.key)
        if ref.key not in values.results:
            raise MissingValue(f"no result from call {ref.key!r}")
        for step in ref.field:
            if isinstance(current, dict) and step in current:
                current = current[step]
            else:
                raise MissingValue(f"{ref} is not in the result of call {ref.key!r}")
        if current is None or isinstance(current, dict | list):
            raise MissingValue(f"{ref} is not a scalar value")
        return current
    source: Mapping[str, str] = getattr(values, ref.source if ref.source != "header" else "headers")
    if ref.key not in source:
        raise MissingValue(f"{ref} is not in the request")
    return source[ref.key]


def as_text(value: Any) -> str:
    """How a scalar is written into a URL: JSON spelling for booleans, str() otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(template: Template, values: RequestValues, encode: Callable[[str], str]) -> str:
    """Fill a template; every looked-up value goes through `encode` (literals do not)."""
    out: list[str] = []
    for part in template.parts:
        out.append(part if isinstance(part, str) else encode(as_text(lookup(part, values))))
    return "".join(out)
