"""Template checks shared by every place that holds templates: parsed, and every ref
readable where it stands (a path parameter the endpoint has, a call listed in `needs`, the
element of a `for_each` call), a list (`*`) only where it is joined into one text."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.models import Problem
from gateway.engine.templates import Ref, Template, parse_template
from gateway.errors import TemplateSyntaxError


@dataclass(frozen=True, slots=True)
class RefScope:
    """What the templates of one call may read."""

    path_params: tuple[str, ...]
    needs: tuple[str, ...]
    """The calls whose results are readable (`{calls.<name>...}`)."""
    calls: int
    """How many calls the endpoint has."""
    for_each: bool = False
    """The templates belong to a `for_each` call: `{item.x}` reads its element."""
    has_body: bool = True
    """Whether the endpoint's requests carry a body (`{body...}` readable): not GET or HEAD."""


def check_ref(ref: Ref, scope: RefScope, where: str) -> list[Problem]:
    """Problems of one ref at `where`."""
    if ref.source == "path" and ref.key not in scope.path_params:
        return [(where, f"{ref}: the endpoint path has no parameter {ref.key!r}")]
    if ref.source == "calls" and ref.key not in scope.needs:
        return [(where, f"{ref}: add {ref.key!r} to `needs` to use its result")]
    if ref.source == "item" and not scope.for_each:
        return [(where, f"{ref}: `item` is the element of a `for_each` call; this call has none")]
    if ref.source == "body" and not scope.has_body:
        return [(where, f"{ref}: GET and HEAD requests carry no body to read")]
    return []


def list_problem(ref: Ref, where: str) -> list[Problem]:
    """A ref that names several values (`*`) where one text value must go."""
    if ref.is_list:
        return [(where, f"{ref} is a list: add |join:SEP to write it as one value (|join:,)")]
    return []


def check_template(text: str, scope: RefScope, where: str) -> tuple[Template | None, list[Problem]]:
    """The parsed template (None when it does not parse) and the problems found in it."""
    try:
        template = parse_template(text)
    except TemplateSyntaxError as exc:
        return None, [(where, str(exc))]
    problems: list[Problem] = []
    for ref in template.refs:
        problems += check_ref(ref, scope, where) + list_problem(ref, where)
    return template, problems
