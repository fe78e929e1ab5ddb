"""Array shaping as tables: each operation, and every KrakenD flatmap example translated."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from gateway.config.shaping import Shape
from gateway.engine.shape import plan_shaping, reshape
from tests.flatmap_examples import EXAMPLES, MOVES, NOTATION_INPUT

SHAPE: TypeAdapter[Shape] = TypeAdapter(Shape)


def shaped(value: Any, spec: Any) -> Any:
    return reshape(value, plan_shaping(SHAPE.validate_python(spec)))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_krakend_examples(name: str) -> None:
    given, spec, expected = EXAMPLES[name]
    assert shaped(given, spec) == expected


@pytest.mark.parametrize(("source", "target", "expected"), MOVES)
def test_krakend_practical_moves(source: str, target: str, expected: Any) -> None:
    assert shaped(NOTATION_INPUT, {"move": {source: target}}) == expected


PAGE = {
    "items": [
        {"id": 1, "price": 30, "tags": ["a"]},
        {"id": 2, "price": 10, "tags": ["b", "c"]},
        {"id": 3, "tags": []},
        {"id": 4, "price": 20, "tags": [["d"]]},
    ],
    "more": [{"id": 5}],
}


@pytest.mark.parametrize(
    ("spec", "expected_ids"),
    [
        ({"sort": {"path": "items", "by": "price"}}, [2, 4, 1, 3]),  # no price: last
        ({"sort": {"path": "items", "by": "price", "order": "desc"}}, [1, 4, 2, 3]),
        ({"sort": {"path": "items", "by": "id", "order": "desc"}}, [4, 3, 2, 1]),
        ({"limit": {"path": "items", "n": 2}}, [1, 2]),
        ({"limit": {"path": "items", "n": 0}}, []),
        # in one mapping sort runs before limit: the two cheapest
        ({"limit": {"path": "items", "n": 2}, "sort": {"path": "items", "by": "price"}}, [2, 4]),
        ({"append": {"items": ["items", "more"]}}, [1, 2, 3, 4, 5]),
        ({"append": {"items": ["more", "items"]}}, [5, 1, 2, 3, 4]),
    ],
)
def test_sort_limit_append(spec: dict[str, Any], expected_ids: list[int]) -> None:
    assert [item["id"] for item in shaped(PAGE, spec)["items"]] == expected_ids


def test_append_moves_its_sources_into_the_target() -> None:
    out = shaped(PAGE, {"append": {"all": ["items", "more", "missing"]}})
    assert set(out) == {"all"} and len(out["all"]) == 5


def test_flatten_one_level_and_with_wildcards() -> None:
    assert shaped({"x": [[1, 2], 3, [[4]]]}, {"flatten": "x"}) == {"x": [1, 2, 3, [4]]}
    tags = shaped(PAGE, {"flatten": ["items.*.tags"]})
    assert [item["tags"] for item in tags["items"]] == [["a"], ["b", "c"], [], ["d"]]


def test_a_list_of_mappings_runs_in_its_order() -> None:
    # limit then sort: the first two, sorted; sort then limit would give the cheapest two
    spec = [{"limit": {"path": "items", "n": 2}}, {"sort": {"path": "items", "by": "price"}}]
    assert [item["id"] for item in shaped(PAGE, spec)["items"]] == [2, 1]


def test_sort_orders_mixed_types_deterministically() -> None:
    values = [{"v": "b"}, {"v": True}, {"v": 2}, {"v": None}, {"v": {"x": 1}}, {"v": 1.5}]
    out = shaped(values, {"sort": {"by": "v"}})
    assert [item["v"] for item in out] == [1.5, 2, "b", True, {"x": 1}, None]


def test_shaping_a_root_list_and_places_that_are_not_there() -> None:
    rows = [{"price_cents": 5}, {"price_cents": 7}, {"other": 1}]
    out = shaped(rows, {"move": {"*.price_cents": "*.price"}})
    assert out == [{"price": 5}, {"price": 7}, {"other": 1}]
    assert shaped(42, {"del": ["a"], "sort": {"path": "x"}, "limit": {"n": 1}}) == 42
    assert shaped({"x": 1}, {"flatten": "x", "sort": {"path": "x"}}) == {"x": 1}
