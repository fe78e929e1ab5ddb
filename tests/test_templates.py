"""Template parsing and rendering."""

from __future__ import annotations

import pytest

from gateway.engine.plan import encode_segment
from gateway.engine.templates import Ref, parse_template, render_text, render_value
from gateway.errors import MissingValue, TemplateSyntaxError

VALUES = {
    "path": {"id": "a/b c"},
    "query": {"lang": "pt"},
    "header": {"accept-language": "pt-PT"},
    "calls": {"product": {"author": {"id": 7}, "flag": True, "obj": {}}},
}


@pytest.mark.parametrize(
    ("text", "refs"),
    [
        ("/p/{id}", [Ref("path", "id")]),
        ("{query.lang}", [Ref("query", "lang")]),
        ("{header.Accept-Language}", [Ref("header", "accept-language")]),
        ("/a/{calls.product.author.id}", [Ref("calls", "product", ("author", "id"))]),
        ("{id:int}", [Ref("path", "id", type_name="int")]),
        ("{{literal}}", []),
    ],
)
def test_parse(text: str, refs: list[Ref]) -> None:
    assert list(parse_template(text).refs) == refs


@pytest.mark.parametrize("text", ["{", "}", "{a b}", "{query.a.b}", "{header.a.b}", "{}"])
def test_parse_errors(text: str) -> None:
    with pytest.raises(TemplateSyntaxError):
        parse_template(text)


def test_render_encodes_only_values() -> None:
    rendered = render_text(
        parse_template("/p/{id}/{calls.product.author.id}"), VALUES, encode_segment
    )
    assert rendered == "/p/a%2Fb%20c/7"
    assert render_text(parse_template("{calls.product.flag}"), VALUES, str) == "true"
    assert render_text(parse_template("{{x}}-{query.lang}"), VALUES, str) == "{x}-pt"


@pytest.mark.parametrize(
    "text", ["{calls.product.missing}", "{calls.other.x}", "{calls.product.obj}", "{query.nope}"]
)
def test_missing_values(text: str) -> None:
    with pytest.raises(MissingValue):
        render_text(parse_template(text), VALUES, str)


@pytest.mark.parametrize("value", ["..", ".", "../x", "x/..", "..\\x"])
def test_segments_that_could_climb_are_refused(value: str) -> None:
    with pytest.raises(MissingValue):
        encode_segment(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{calls.order.total}", 12.5),  # a whole-string ref keeps its JSON type
        ("{calls.order.items}", [{"sku": "a"}, {"sku": "b"}]),
        ("{calls.order.paid}", False),
        ("{calls.order.note}", None),
        (
            "{calls.order}",
            {"total": 12.5, "items": [{"sku": "a"}, {"sku": "b"}], "paid": False, "note": None},
        ),
        ("total {calls.order.total} EUR", "total 12.5 EUR"),  # text mixed with refs is text
        ("{id}", "a/b c"),
        ("plain", "plain"),
    ],
)
def test_render_value_keeps_json_types(text: str, expected: object) -> None:
    sources = {
        **VALUES,
        "calls": {
            "order": {
                "total": 12.5,
                "items": [{"sku": "a"}, {"sku": "b"}],
                "paid": False,
                "note": None,
            }
        },
    }
    assert render_value(parse_template(text), sources) == expected


def test_text_cannot_hold_a_list() -> None:
    sources = {**VALUES, "calls": {"order": {"items": [1, 2]}}}
    with pytest.raises(MissingValue, match="not a scalar"):
        render_value(parse_template("items: {calls.order.items}"), sources)


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("{client.ip}", Ref("client", "ip")),
        ("{calls.a.b.c.d}", Ref("calls", "a", ("b", "c", "d"))),
    ],
)
def test_every_source_reads_through_one_lookup(text: str, ref: Ref) -> None:
    assert parse_template(text).single_ref == ref


def test_an_unknown_source_names_the_ones_there_are() -> None:
    with pytest.raises(TemplateSyntaxError, match=r"use \{param\}, \{query\.x\}"):
        parse_template("{bdy.x}")
