"""Call bodies: `body: forward` (the client's bytes as they came) or a JSON template.

A JSON template is any JSON value whose strings are templates, parsed once at start-up: a
string that is exactly one ref keeps the value's JSON type (a number stays a number, a list
a list: `render_value`); a string mixing text and refs renders as text; keys and values that
are not strings are literal. A template without any ref is encoded once, at start-up.

`call_templates` lists every template a call holds (path, query, headers, args, SQL params,
body), so the config checks and the planner see the same ones: an endpoint reads the
client's JSON body exactly when one of them refers to `{body...}`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.config.models import CallSpec
from gateway.engine.context import RawBody
from gateway.engine.templates import Sources, Template, parse_template, render_value
from gateway.types import JSON

FORWARD = "forward"
"""`body: forward`: the client's body, unchanged, with its Content-Type."""
JSON_MEDIA_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class ForwardBody:
    """The client's bytes as they came, with the client's Content-Type (none if it sent none)."""

    def render(self, sources: Sources, raw: RawBody | None) -> tuple[bytes, str | None]:
        if raw is None:
            return b"", None
        return raw.data, raw.content_type


@dataclass(frozen=True, slots=True)
class JsonBody:
    """A JSON template: `tree` is the configured value with every string parsed."""

    tree: Any
    encoded: bytes | None = None
    """The body already encoded, when the template has no ref at all."""

    def render(self, sources: Sources, raw: RawBody | None) -> tuple[bytes, str | None]:
        """The JSON bytes; MissingValue when a value a ref needs is absent."""
        if self.encoded is not None:
            return self.encoded, JSON_MEDIA_TYPE
        return orjson.dumps(_render(self.tree, sources)), JSON_MEDIA_TYPE


Body = ForwardBody | JsonBody


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type names JSON: `application/json` or any `application/*+json`
    (problem+json, merge-patch+json...), parameters such as charset ignored."""
    if not content_type:
        return False
    media = content_type.partition(";")[0].strip().lower()
    if media == JSON_MEDIA_TYPE:
        return True
    return media.startswith("application/") and media.endswith("+json")


def plan_body(value: JSON) -> Body | None:
    """The body of a (checked) call's `body:` value; None: the call sends no body."""
    if value is None:
        return None
    if value == FORWARD:
        return ForwardBody()
    tree = _parse(value)
    static = not any(True for _ in _templates(tree))
    return JsonBody(tree, orjson.dumps(_render(tree, {})) if static else None)


def body_texts(value: JSON, where: str = "body") -> Iterator[tuple[str, str]]:
    """(location, text) of every string of a body template, e.g. ('body.lines[0]', '{x}');
    nothing for `forward`."""
    if value == FORWARD:
        return
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from body_texts(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from body_texts(item, f"{where}[{index}]")


def call_templates(call: CallSpec) -> Iterator[tuple[str, str]]:
    """(field, text) of every template of a call, whatever its kind reads of them."""
    yield "path", call.path
    yield from ((f"query.{k}", v) for k, v in call.query.items())
    yield from ((f"headers.{k}", v) for k, v in call.headers.items())
    yield from ((f"args.{k}", v) for k, v in call.args.items())
    yield from ((f"params[{i}]", v) for i, v in enumerate(call.params))
    yield from body_texts(call.body)


def reads_body(calls: Iterable[CallSpec]) -> bool:
    """True when a template of any of `calls` refers to the client's body (`{body...}`).

    For checked calls only: every template parses.
    """
    return any(
        ref.source == "body"
        for call in calls
        for _, text in call_templates(call)
        for ref in parse_template(text).refs
    )


def _parse(value: JSON) -> Any:
    if isinstance(value, str):
        return parse_template(value)
    if isinstance(value, dict):
        return {key: _parse(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_parse(item) for item in value]
    return value


def _templates(tree: Any) -> Iterator[Template]:
    if isinstance(tree, Template):
        if tree.refs:
            yield tree
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _templates(item)
    elif isinstance(tree, list):
        for item in tree:
            yield from _templates(item)


def _render(tree: Any, sources: Sources) -> Any:
    if isinstance(tree, Template):
        return render_value(tree, sources)
    if isinstance(tree, dict):
        return {key: _render(item, sources) for key, item in tree.items()}
    if isinstance(tree, list):
        return [_render(item, sources) for item in tree]
    return tree
