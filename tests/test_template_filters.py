"""Template refs with `*`, list indexes, the `item` source and filters (`|join`, `|default`)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.engine.plan import render_pairs
from gateway.engine.templates import (
    Filter,
    Ref,
    is_absent,
    parse_template,
    render_text,
    render_value,
)
from gateway.errors import MissingValue, TemplateSyntaxError

SOURCES: dict[str, Any] = {
    "path": {"id": "7"},
    "query": {"page": "3", "empty": ""},
    "header": {},
    "calls": {
        "products": [{"id": 1, "author": {"id": 10}}, {"id": 2, "author": {"id": 20}}, {"x": 0}],
        "none": None,
    },
    "item": {"author_id": 42, "tags": ["a", "b"], "nested": {"sku": "S-1"}},
}


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("{calls.products.*.id}", Ref("calls", "products", ("*", "id"))),
        ("{calls.products.0.id}", Ref("calls", "products", ("0", "id"))),
        ("{item.author_id}", Ref("item", "author_id")),
        ("{item.nested.sku}", Ref("item", "nested", ("sku",))),
        (
            "{calls.products.*.id|join:,}",
            Ref("calls", "products", ("*", "id"), filters=(Filter("join", ","),)),
        ),
        ("{query.page|default:1}", Ref("query", "page", filters=(Filter("default", "1"),))),
        (
            "{query.page:int|default:1}",
            Ref("query", "page", type_name="int", filters=(Filter("default", "1"),)),
        ),
        ("{item}", Ref("path", "item")),  # a bare name stays a path parameter
    ],
)
def test_parse(text: str, ref: Ref) -> None:
    assert parse_template(text).single_ref == ref
    assert str(ref) == text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{calls.x.*|shout:1}", "unknown filter 'shout'"),
        ("{calls.x.*|join}", "`join` takes a value"),
        ("{query.page|default}", "`default` takes a value"),
        ("{calls.x.a*}", "a field is a name, a list index or `*`"),
        ("{calls.*.id}", "bad placeholder"),  # a call's name, not a wildcard
        ("{item}.x", None),  # fine: a path parameter and text
    ],
)
def test_parse_errors(text: str, why: str | None) -> None:
    if why is None:
        parse_template(text)
        return
    with pytest.raises(TemplateSyntaxError, match=why.replace("*", r"\*").replace("|", r"\|")):
        parse_template(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{calls.products.*.id}", [1, 2]),  # a list: elements without the field are skipped
        ("{calls.products.*.author.id}", [10, 20]),
        ("{calls.products.1.author.id}", 20),
        ("{calls.products.*.id|join:,}", "1,2"),
        ("{calls.products.*.id|join: | }", None),  # `|` cannot be a separator: see below
        ("{calls.products.*.missing|join:,}", ""),
        ("{item.tags|join:-}", "a-b"),
        ("{item.author_id}", 42),
        ("{item.author_id|join:,}", "42"),  # a scalar joins as itself
        ("{query.page|default:1}", "3"),
        ("{query.nope|default:1}", "1"),
        ("{query.empty|default:1}", ""),  # sent empty is sent
        ("{calls.none|default:none}", "none"),  # null takes the default
        ("{calls.products.*.nope|join:,|default:x}", ""),
        ("{calls.missing.a|join:,|default:x}", "x"),
    ],
)
def test_render_value(text: str, expected: Any) -> None:
    if expected is None:
        with pytest.raises(TemplateSyntaxError):
            parse_template(text)
        return
    assert render_value(parse_template(text), SOURCES) == expected


def test_text_takes_joined_lists_and_defaults() -> None:
    template = parse_template("/a/{item.nested.sku}?ids={calls.products.*.id|join:,}")
    assert render_text(template, SOURCES, str) == "/a/S-1?ids=1,2"
    with pytest.raises(MissingValue, match="not a scalar"):
        render_text(parse_template("{calls.products.*.id}"), SOURCES, str)
    with pytest.raises(MissingValue, match="not in the element"):
        render_text(parse_template("{item.nope}"), SOURCES, str)
    with pytest.raises(MissingValue, match="`join` needs a list of scalar values"):
        render_text(parse_template("{calls.products|join:,}"), SOURCES, str)


def test_a_defaulted_client_value_is_never_left_out() -> None:
    pairs = (("page", parse_template("{query.size|default:20}")),)
    assert render_pairs(pairs, SOURCES) == (("page", "20"),)
    assert not is_absent(parse_template("{query.size|default:20}").refs[0], SOURCES)
    assert is_absent(parse_template("{query.size}").refs[0], SOURCES)
    assert render_pairs((("page", parse_template("{query.size}")),), SOURCES) == ()
