"""Fanning a call out over a list, without a network: which elements, which requests, how
many at once, which failures. The `send` here is a plain coroutine standing for the call's
policy-wrapped Call (the end-to-end tests use real backends: tests/test_collections.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.engine.foreach import ForEach, elements, run_for_each
from gateway.engine.templates import Sources, parse_template, render_text
from gateway.errors import BadStatus, MissingValue, TooManyItems
from gateway.types import BackendRequest, BackendResponse


@pytest.mark.parametrize(
    ("value", "path", "expected"),
    [
        ([{"a": 1}, {"a": 2}], (), [((0,), {"a": 1}), ((1,), {"a": 2})]),
        ({"items": [5, 6]}, ("items",), [(("items", 0), 5), (("items", 1), 6)]),
        ({"items": None}, ("items",), []),
        (
            {"orders": [{"lines": [1, 2]}, {"lines": [3]}, {"lines": None}, {}]},
            ("orders", "*", "lines"),
            [
                (("orders", 0, "lines", 0), 1),
                (("orders", 0, "lines", 1), 2),
                (("orders", 1, "lines", 0), 3),
            ],
        ),
        (
            {"variants": [{"supplier": {"id": 1}}, {"supplier": {"id": 2}}]},
            ("variants", "*", "supplier"),
            [(("variants", 0, "supplier"), {"id": 1}), (("variants", 1, "supplier"), {"id": 2})],
        ),
    ],
)
def test_elements(value: Any, path: tuple[str, ...], expected: list[Any]) -> None:
    assert elements(value, path) == expected


@pytest.mark.parametrize(
    ("value", "path", "why"),
    [({"items": {"a": 1}}, ("items",), "is not a list"), ({}, ("items",), "is not in")],
)
def test_elements_that_are_not_there_fail_the_call(
    value: Any, path: tuple[str, ...], why: str
) -> None:
    with pytest.raises(MissingValue, match=why):
        elements(value, path)


PATH = parse_template("/authors/{item.author_id}")


def build(sources: Sources) -> BackendRequest:
    return BackendRequest(path=render_text(PATH, sources, str))


class Upstream:
    """Answers `/authors/N` with `{"id": N}`; counts what it gets and how much at once."""

    def __init__(self, fail: frozenset[str] = frozenset()) -> None:
        self.paths: list[str] = []
        self.in_flight = 0
        self.peak = 0
        self.fail = fail

    async def __call__(self, request: BackendRequest) -> BackendResponse:
        self.paths.append(request.path)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0)  # let every worker start before any finishes
            await asyncio.sleep(0)
            if request.path in self.fail:
                raise BadStatus(f"{request.path} failed", status=503)
            return BackendResponse(200, {"data": {"id": int(request.path.rsplit("/", 1)[1])}})
        finally:
            self.in_flight -= 1


def plan(concurrency: int = 10, max_items: int = 100) -> ForEach:
    return ForEach("products", (), ("author",), concurrency, max_items)


def products(*author_ids: Any) -> Sources:
    return {"calls": {"products": [{"author_id": a} for a in author_ids]}}


def test_identical_requests_are_sent_once_and_results_keep_source_order() -> None:
    upstream = Upstream()
    result = asyncio.run(run_for_each(plan(), products(3, 1, 3, 2, 1), build, upstream, ("data",)))
    assert result.value == [{"id": 3}, {"id": 1}, {"id": 3}, {"id": 2}, {"id": 1}]
    assert sorted(upstream.paths) == ["/authors/1", "/authors/2", "/authors/3"]
    assert result.sent == 3 and result.failed_elements == {}


@pytest.mark.parametrize(("concurrency", "peak"), [(1, 1), (4, 4), (50, 30)])
def test_never_more_requests_in_flight_than_the_concurrency(concurrency: int, peak: int) -> None:
    upstream = Upstream()
    asyncio.run(run_for_each(plan(concurrency), products(*range(30)), build, upstream, ()))
    assert upstream.peak == peak and len(upstream.paths) == 30


def test_a_failed_element_fails_alone() -> None:
    upstream = Upstream(fail=frozenset({"/authors/2"}))
    sources = {"calls": {"products": [{"author_id": 1}, {"author_id": 2}, {"x": 0}, 2]}}
    result = asyncio.run(run_for_each(plan(), sources, build, upstream, ("data",)))
    assert result.value == [{"id": 1}, None, None, None]
    assert sorted(result.failed_elements) == [1, 2, 3]
    assert isinstance(result.failed_elements[1], BadStatus)
    assert isinstance(result.failed_elements[2], MissingValue)  # no author_id: never sent
    assert isinstance(result.failed_elements[3], MissingValue)  # not an object
    assert upstream.paths == ["/authors/1", "/authors/2"]


def test_a_missing_target_fails_the_element() -> None:
    upstream = Upstream()
    result = asyncio.run(run_for_each(plan(), products(1), build, upstream, ("nope",)))
    assert result.value == [None] and list(result.failed_elements) == [0]


def test_over_max_items_nothing_is_sent() -> None:
    upstream = Upstream()
    with pytest.raises(TooManyItems, match=r"has 11 elements, more than max_items \(10\)"):
        asyncio.run(run_for_each(plan(max_items=10), products(*range(11)), build, upstream, ()))
    assert upstream.paths == []
    result = asyncio.run(
        run_for_each(plan(max_items=10), products(*range(10)), build, upstream, ())
    )
    assert len(result.value) == 10


def test_an_empty_list_sends_nothing() -> None:
    upstream = Upstream()
    result = asyncio.run(run_for_each(plan(), products(), build, upstream, ()))
    assert (result.value, result.sent, upstream.paths) == ([], 0, [])
