"""Merge rules as tables: pick -> allow/deny -> rename -> group, config order wins."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.engine.merge import Shape, _allow, dotted, merge, pick_field, transform
from gateway.errors import BadBody

PRODUCT = {"id": 1, "name": "Lamp", "price_cents": 900, "dims": {"w": 1, "h": 2}, "tags": ["a"]}


@pytest.mark.parametrize(
    ("shape", "value", "expected"),
    [
        (Shape("p", allow=(("id",), ("name",))), PRODUCT, {"id": 1, "name": "Lamp"}),
        (Shape("p", allow=(("dims", "w"),)), PRODUCT, {"dims": {"w": 1}}),
        (Shape("p", allow=(("dims",), ("dims", "w"))), PRODUCT, {"dims": {"w": 1, "h": 2}}),
        (Shape("p", allow=(("missing",),)), PRODUCT, {}),
        (
            Shape("p", deny=(("dims", "h"), ("tags",))),
            PRODUCT,
            {"id": 1, "name": "Lamp", "price_cents": 900, "dims": {"w": 1}},
        ),
        (
            Shape("p", allow=(("id",), ("price_cents",)), rename=(("price_cents", "price"),)),
            PRODUCT,
            {"id": 1, "price": 900},
        ),
        (Shape("p", allow=(("id",),)), [{"id": 1, "x": 2}, {"id": 3}], [{"id": 1}, {"id": 3}]),
        (
            Shape("p", allow=(("items", "id"),)),
            {"items": [{"id": 1, "x": 2}]},
            {"items": [{"id": 1}]},
        ),
        (Shape("p", deny=(("x",),)), 42, 42),
    ],
)
def test_transform(shape: Shape, value: Any, expected: Any) -> None:
    assert transform(value, shape) == expected


def test_target_takes_nested_field_or_fails() -> None:
    assert pick_field({"data": {"item": 5}}, dotted("data.item")) == 5
    assert pick_field([1], ()) == [1]
    with pytest.raises(BadBody, match=r"no field 'data\.x'"):
        pick_field({"data": {}}, dotted("data.x"))


def test_merge_follows_config_order_and_groups() -> None:
    merged = merge(
        [
            (Shape("a"), {"id": 1, "name": "first"}),
            (Shape("b"), {"id": 2}),
            (Shape("c", group="reviews"), {"n": 3}),
            (Shape("d", group="reviews"), {"m": 4}),
            (Shape("e"), [1, 2]),
            (Shape("f", group="count"), 7),
        ]
    )
    assert merged == {
        "id": 2,
        "name": "first",
        "reviews": {"n": 3, "m": 4},
        "e": [1, 2],
        "count": 7,
    }


ALLOW_PATHS = [
    (("id",), ("name",)),
    (("dims", "w"),),
    (("dims",), ("dims", "w")),
    (("dims", "w"), ("dims",)),
    (("missing",), ("dims", "nope")),
    (("items", "id"), ("items", "tags")),
    (("items", "*", "id"),),
    (("items", "*"),),
    (("*",),),
    (("*", "w"), ("id",)),
    (("id",), ("dims", "*")),
    (("0",), ("items", "0")),
]
ALLOW_VALUES = [
    PRODUCT,
    {"items": [{"id": 1, "tags": ["x"], "x": 2}, {"id": 3}, 7, [{"id": 4, "y": 5}]], "id": 9},
    [{"id": 1, "dims": {"w": 1, "h": 2}}, [{"name": "n"}], "text"],
    {"0": "zero", "dims": [{"w": 1}, {"h": 2}], "name": None},
    42,
]


@pytest.mark.parametrize("paths", ALLOW_PATHS, ids=str)
@pytest.mark.parametrize("value", ALLOW_VALUES, ids=range(len(ALLOW_VALUES)))
def test_compiled_allow_shapes_as_the_generic_walk(paths: Any, value: Any) -> None:
    """`Shape.allowing` (compiled at start-up) keeps exactly what `_allow` keeps, key order
    included, and leaves the value itself untouched."""
    before = repr(value)
    compiled = Shape("p", allow=paths).allowing
    assert compiled is not None
    shaped = compiled.apply(value)
    assert repr(shaped) == repr(_allow(value, paths))  # repr: the key order too
    assert repr(value) == before
