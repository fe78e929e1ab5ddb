"""The executor's ordering and failure rules, with in-process steps (no network)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from gateway.engine.execute import Node, execute
from gateway.errors import BadStatus, CallTimeout, Skipped


def returning(value: Any, log: list[str], name: str) -> Node:
    async def run(results: Mapping[str, Any]) -> Any:
        log.append(name)
        return value

    return Node(name, (), 5.0, run)


async def test_needs_run_after_their_dependencies_and_see_results() -> None:
    log: list[str] = []
    gate = asyncio.Event()

    async def first(results: Mapping[str, Any]) -> Any:
        await gate.wait()
        log.append("first")
        return {"id": 3}

    async def second(results: Mapping[str, Any]) -> Any:
        log.append("second")
        return results["first"]["id"] * 2

    async def opener(results: Mapping[str, Any]) -> Any:
        log.append("opener")
        gate.set()  # `first` can only finish after an independent step has started
        return None

    loop = asyncio.get_running_loop()
    outcomes = await execute(
        [
            Node("second", ("first",), 5, second),
            Node("first", (), 5, first),
            Node("opener", (), 5, opener),
        ],
        loop.time() + 5,
    )
    assert log == ["opener", "first", "second"]
    assert outcomes["second"].value == 6


async def test_failures_become_outcomes_and_dependants_are_skipped() -> None:
    async def failing(results: Mapping[str, Any]) -> Any:
        raise BadStatus("no", status=503)

    async def dependant(results: Mapping[str, Any]) -> Any:
        raise AssertionError("must not run")

    log: list[str] = []
    loop = asyncio.get_running_loop()
    outcomes = await execute(
        [Node("a", (), 5, failing), Node("b", ("a",), 5, dependant), returning(1, log, "c")],
        loop.time() + 5,
    )
    assert isinstance(outcomes["a"].error, BadStatus)
    skipped = outcomes["b"].error
    assert isinstance(skipped, Skipped) and skipped.cause == "a"
    assert outcomes["c"].value == 1


async def test_step_timeout_and_deadline() -> None:
    never = asyncio.Event()

    async def hangs(results: Mapping[str, Any]) -> Any:
        await never.wait()

    loop = asyncio.get_running_loop()
    outcomes = await execute(
        [Node("own", (), 0.05, hangs), Node("deadline", (), 60, hangs)], loop.time() + 0.1
    )
    assert isinstance(outcomes["own"].error, CallTimeout)
    assert "timeout of 0.05s" in str(outcomes["own"].error)
    assert isinstance(outcomes["deadline"].error, CallTimeout)
    assert "endpoint deadline" in str(outcomes["deadline"].error)


async def test_a_bug_propagates_and_cancels_siblings() -> None:
    cancelled = asyncio.Event()
    never = asyncio.Event()

    async def buggy(results: Mapping[str, Any]) -> Any:
        raise KeyError("bug")

    async def sibling(results: Mapping[str, Any]) -> Any:
        try:
            await never.wait()
        finally:
            cancelled.set()

    loop = asyncio.get_running_loop()
    with pytest.raises(ExceptionGroup):
        await execute([Node("bug", (), 5, buggy), Node("sibling", (), 5, sibling)], loop.time() + 5)
    assert cancelled.is_set()
