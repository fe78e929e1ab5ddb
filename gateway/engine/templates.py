"""Config templates: `{id}`, `{query.lang}`, `{header.accept-language}`, `{client.ip}`,
`{calls.product.author_id}`, `{item.sku}`, `{calls.products.*.id|join:,}`,
`{body.customer.name}`.

A template is parsed once at start-up into literal text and `Ref`s; rendering only looks
values up. Every ref reads one *source* by name (`path`, `query`, `header`, `client`,
`calls`, and what later steps add) through one lookup, so a new source is one entry in
`SOURCES`, not a change in every renderer. `{{` and `}}` stand for literal braces. A ref may
carry a type suffix (`{id:int}`) for backends that take typed arguments.

A ref's field path is a path of `gateway.engine.paths`: a number indexes a list and `*` is
every element (`{calls.products.*.id}` is the list of ids). Filters follow the ref, applied
left to right: `|join:SEP` writes a list as one text (`1,2,3`), `|default:VALUE` stands for a
value that is missing or null (`{query.page|default:1}`).

Two ways to render: `render_text` writes every value as text into a string (a URL path, a
header); `render_value` keeps the JSON type of a template that is exactly one ref, so a
number stays a number and a list stays a list (body templates).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.engine.paths import WILDCARD, get, matches
from gateway.errors import MissingValue, TemplateSyntaxError

Sources = Mapping[str, Any]
"""What templates read, by source name: each source is a JSON-like value (usually a dict)."""


@dataclass(frozen=True, slots=True)
class SourceRule:
    """How refs into one source are spelled: how many names follow the source's own name."""

    min_names: int
    max_names: int | None  # None: any depth (a field path into JSON)
    case_insensitive: bool = False  # header names
    from_client: bool = True  # a bad value is the client's mistake (400), not a failed call


SOURCES: Mapping[str, SourceRule] = {
    "query": SourceRule(1, 1),
    "header": SourceRule(1, 1, case_insensitive=True),
    "client": SourceRule(1, 1),
    "calls": SourceRule(1, None, from_client=False),
    "item": SourceRule(1, None, from_client=False),  # the element of a `for_each` call
    # what the endpoint's authenticator accepted: {auth.sub}, {auth.claims.tenant},
    # {auth.key.name} (gateway/web/auth); only endpoints with `auth` may read it
    "auth": SourceRule(1, None),
    "body": SourceRule(1, None),  # the client's JSON body (gateway/web/request_body.py)
}
"""Every source a ref may name besides `path` (a bare `{name}` is a path parameter)."""

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_FIELD = re.compile(r"^([A-Za-z0-9_\-]+|\*)$")  # after the key: numbers and `*` too
FILTERS = ("join", "default")
"""Filters a ref may carry (`{calls.x.*.id|join:,}`, `{query.page|default:1}`)."""


@dataclass(frozen=True, slots=True)
class Filter:
    """One `|name:arg` after a ref."""

    name: str
    arg: str

    def __str__(self) -> str:
        return f"|{self.name}:{self.arg}"


@dataclass(frozen=True, slots=True)
class Ref:
    """One placeholder: its source, the key in that source, a field path, an optional type."""

    source: str
    key: str
    field: tuple[str, ...] = ()
    type_name: str | None = None
    filters: tuple[Filter, ...] = ()

    def __str__(self) -> str:
        dotted = ".".join(
            ((self.source,) if self.source != "path" else ()) + (self.key, *self.field)
        )
        typed = f":{self.type_name}" if self.type_name else ""
        return "{" + dotted + typed + "".join(str(f) for f in self.filters) + "}"

    @property
    def is_list(self) -> bool:
        """True when the ref names several values (a `*` in its field) that no filter joins."""
        return WILDCARD in self.field and not any(f.name == "join" for f in self.filters)

    @property
    def has_default(self) -> bool:
        return any(f.name == "default" for f in self.filters)

    @property
    def from_client(self) -> bool:
        """True when the value comes from the client request (path, query, headers...)."""
        rule = SOURCES.get(self.source)
        return rule is None or rule.from_client


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

    @property
    def is_static(self) -> bool:
        """True when the template has no refs: it renders the same for every request."""
        return not self.refs


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
    typed, *filter_texts = body.split("|")
    expr, _, type_name = typed.strip().partition(":")
    names = expr.split(".")
    head, rest = names[0], names[1:]
    if not _NAME.match(head) or (rest and not _NAME.match(rest[0])):
        raise TemplateSyntaxError(f"bad placeholder {{{body}}}")
    if not all(_FIELD.match(n) for n in rest[1:]):
        raise TemplateSyntaxError(
            f"bad placeholder {{{body}}}: a field is a name, a list index or `*`"
        )
    kind = type_name or None
    filters = tuple(_parse_filter(text, body) for text in filter_texts)
    rule = SOURCES.get(head)
    if rule is not None and rest:
        if len(rest) < rule.min_names or (
            rule.max_names is not None and len(rest) > rule.max_names
        ):
            raise TemplateSyntaxError(f"bad placeholder {{{body}}}: {_spelling()}")
        key = rest[0].lower() if rule.case_insensitive else rest[0]
        return Ref(head, key, tuple(rest[1:]), type_name=kind, filters=filters)
    if len(names) == 1:
        return Ref("path", head, type_name=kind, filters=filters)
    raise TemplateSyntaxError(f"bad placeholder {{{body}}}: {_spelling()}")


def _parse_filter(text: str, body: str) -> Filter:
    name, colon, arg = text.partition(":")
    name = name.strip()
    if name not in FILTERS:
        known = ", ".join(f"|{f}:..." for f in FILTERS)
        raise TemplateSyntaxError(f"{{{body}}}: unknown filter {name!r} (filters: {known})")
    if not colon:
        example = "|join:," if name == "join" else "|default:1"
        raise TemplateSyntaxError(f"{{{body}}}: `{name}` takes a value, e.g. {example}")
    return Filter(name, arg)


def _spelling() -> str:
    examples = ["{param}"]
    for name, rule in SOURCES.items():
        examples.append("{" + name + ".x" + (".field" if rule.max_names is None else "") + "}")
    return "use " + ", ".join(examples[:-1]) + " or " + examples[-1]


def lookup(ref: Ref, sources: Sources) -> Any:
    """The value a ref points at, of any JSON type, through its filters; MissingValue when
    it is absent (and no `default` stands in for it).

    A field path with `*` gives the list of every value it reaches (possibly empty).
    """
    if not ref.filters:
        return _find(ref, sources)
    missing: MissingValue | None = None
    try:
        value = _find(ref, sources)
    except MissingValue as exc:
        missing, value = exc, _MISSING
    for step in ref.filters:
        value = _apply(step, value, ref)
    if value is _MISSING:
        raise missing or MissingValue(f"{ref} has no value")
    return value


_MISSING: Any = object()


def _find(ref: Ref, sources: Sources) -> Any:
    source = sources.get(ref.source)
    if source is None:
        raise MissingValue(f"{ref}: no {ref.source!r} values here")
    if not isinstance(source, Mapping) or ref.key not in source:
        if ref.source == "calls":
            raise MissingValue(f"no result from call {ref.key!r}")
        raise MissingValue(f"{ref} is not in {_where(ref)}")
    if not ref.field:
        return source[ref.key]
    if WILDCARD in ref.field:
        return [found for _, found in matches(source[ref.key], ref.field)]
    try:
        return get(source[ref.key], ref.field)
    except KeyError:
        raise MissingValue(f"{ref} is not in {_where(ref)}") from None


def _where(ref: Ref) -> str:
    if ref.source == "calls":
        return f"the result of call {ref.key!r}"
    if ref.source == "item":
        return "the element"
    return "the request"


def _apply(step: Filter, value: Any, ref: Ref) -> Any:
    if step.name == "default":
        return step.arg if value is _MISSING or value is None else value
    # join: a list of scalars as one text; a scalar stays itself, as text
    if value is _MISSING or value is None:
        return value
    items = value if isinstance(value, list) else [value]
    if any(isinstance(item, dict | list) for item in items):
        raise MissingValue(f"{ref}: `join` needs a list of scalar values")
    return step.arg.join(as_text(item) for item in items if item is not None)


def lookup_scalar(ref: Ref, sources: Sources) -> str | int | float | bool:
    """A ref's value when it is a scalar (text, number, boolean); MissingValue otherwise."""
    value = lookup(ref, sources)
    if value is None or isinstance(value, dict | list):
        raise MissingValue(f"{ref} is not a scalar value")
    return value  # type: ignore[no-any-return]


def is_absent(ref: Ref, sources: Sources) -> bool:
    """True when a ref into the client request names a value the client did not send (for
    a field path into a JSON body: any step of it missing)."""
    if not ref.from_client or ref.source == "path" or ref.has_default:
        return False
    current = sources.get(ref.source)
    for step in (ref.key, *ref.field):
        if not isinstance(current, Mapping) or step not in current:
            return True
        current = current[step]
    return False


def as_text(value: Any) -> str:
    """How a scalar is written into a URL: JSON spelling for booleans, str() otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_text(template: Template, sources: Sources, encode: Callable[[str], str]) -> str:
    """Fill a template as text; every looked-up value goes through `encode` (literals do not)."""
    out: list[str] = []
    for part in template.parts:
        out.append(part if isinstance(part, str) else encode(as_text(lookup_scalar(part, sources))))
    return "".join(out)


def render_value(template: Template, sources: Sources) -> Any:
    """Fill a template keeping JSON types: exactly one ref gives its value as it is (a number,
    a list...); text mixed with refs gives text."""
    ref = template.single_ref
    if ref is not None:
        return lookup(ref, sources)
    return render_text(template, sources, str)
