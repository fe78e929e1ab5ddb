"""Dotted paths with `*` and list indexes, as tables: reading, writing, deleting, checking."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.engine.paths import delete, get, matches, parse_path, path_problem, put, update_at
from tests.flatmap_examples import NOTATION, NOTATION_INPUT

DOC: dict[str, Any] = {"items": [{"id": 1, "tags": ["a", "b"]}, {"id": 2}], "meta": {"n": 2}}


@pytest.mark.parametrize(("path", "expected"), NOTATION)
def test_krakend_notation_reads_the_values_its_docs_say(path: str, expected: Any) -> None:
    found = [value for _, value in matches(NOTATION_INPUT, parse_path(path))]
    assert found == (expected if "*" in path else [expected])


@pytest.mark.parametrize(
    ("path", "locations"),
    [
        ("items.*.id", [("items", 0, "id"), ("items", 1, "id")]),
        ("items.1", [("items", 1)]),
        ("items.7", []),
        ("items.*.tags.*", [("items", 0, "tags", 0), ("items", 0, "tags", 1)]),
        ("meta.*", [("meta", "n")]),
        ("meta.n.deeper", []),
        ("", [()]),
    ],
)
def test_matches_give_concrete_locations(path: str, locations: list[tuple[Any, ...]]) -> None:
    assert [at for at, _ in matches(DOC, parse_path(path))] == locations


def test_get_reads_one_place_or_raises() -> None:
    assert get(DOC, ("items", "0", "id")) == 1
    assert get(DOC, ("items", 1, "id")) == 2
    with pytest.raises(KeyError):
        get(DOC, ("items", "x"))
    with pytest.raises(KeyError):
        get(DOC, ("meta", "n", "deeper"))


@pytest.mark.parametrize(
    ("path", "new", "expected"),
    [
        (("meta", "m"), 3, {"items": DOC["items"], "meta": {"n": 2, "m": 3}}),
        (("x", "y", "z"), 1, {**DOC, "x": {"y": {"z": 1}}}),  # objects created on the way
        (("items", 1, "id"), 9, {**DOC, "items": [DOC["items"][0], {"id": 9}]}),
        (("items", 5, "id"), 9, DOC),  # no such element: unchanged
        (("meta", "n", "deeper"), 1, DOC),  # a scalar on the way: unchanged
        ((), 5, 5),
    ],
)
def test_put(path: tuple[Any, ...], new: Any, expected: Any) -> None:
    assert put(DOC, path, new) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("items.*.tags", {**DOC, "items": [{"id": 1}, {"id": 2}]}),
        ("items.0", {**DOC, "items": [{"id": 2}]}),
        ("meta.*", {**DOC, "meta": {}}),
        ("items.*", {**DOC, "items": []}),
        ("nothing.here", DOC),
    ],
)
def test_delete_removes_the_last_segment_everywhere(path: str, expected: Any) -> None:
    assert delete(DOC, parse_path(path)) == expected


def test_writes_never_mutate_their_input() -> None:
    before = repr(DOC)
    update_at(DOC, ("items", "*", "id"), lambda v: v * 10)
    put(DOC, ("items", 0, "id"), 5)
    delete(DOC, ("items", "*", "tags"))
    assert repr(DOC) == before


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("items.*.id", None),
        ("a.0.b", None),
        ("", "empty path"),
        ("a..b", "empty segment"),
        (".a", "empty segment"),
        ("a.", "empty segment"),
        ("a.b*", "`*` must be a whole segment"),
        ("**", "`*` must be a whole segment"),
    ],
)
def test_path_problems(text: str, problem: str | None) -> None:
    found = path_problem(text)
    assert (found is None) if problem is None else (found is not None and problem in found)
