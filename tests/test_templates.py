"""Template parsing and rendering."""

from __future__ import annotations

import pytest

from gateway.plan import encode_segment
from gateway.templates import (
    MissingValue,
    Ref,
    RequestValues,
    TemplateSyntaxError,
    parse_template,
    render,
)

VALUES = RequestValues(
    path={"id": "a/b c"},
    query={"lang": "pt"},
    headers={"accept-language": "pt-PT"},
    results={"product": {"author": {"id": 7}, "flag": True, "obj": {}}},
)


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
    rendered = render(parse_template("/p/{id}/{calls.product.author.id}"), VALUES, encode_segment)
    assert rendered == "/p/a%2Fb%20c/7"
    assert render(parse_template("{calls.product.flag}"), VALUES, str) == "true"
    assert render(parse_template("{{x}}-{query.lang}"), VALUES, str) == "{x}-pt"


@pytest.mark.parametrize(
    "text", ["{calls.product.missing}", "{calls.other.x}", "{calls.product.obj}", "{query.nope}"]
)
def test_missing_values(text: str) -> None:
    with pytest.raises(MissingValue):
        render(parse_template(text), VALUES, str)


@pytest.mark.parametrize("value", ["..", ".", "../x", "x/..", "..\\x"])
def test_segments_that_could_climb_are_refused(value: str) -> None:
    with pytest.raises(MissingValue):
        encode_segment(value)
