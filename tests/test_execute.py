"""The executor's ordering and failure rules, with in-process steps (no network); what an
aggregation tells it of a call's own bound."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from gateway.backends.registry import traits_of
from gateway.config.loader import parse_spec
from gateway.config.models import BreakerSpec
from gateway.engine.execute import Node, execute
from gateway.engine.plan import plan_endpoint
from gateway.errors import BadStatus, CallTimeout, Skipped
from gateway.policies.breaker import Breaker, guarded
from gateway.policies.timeout import timeout
from gateway.types import BackendRequest, BackendResponse, Call
from gateway.web.aggregate import single_try_bound


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


# --- independent nodes: no tasks or futures beyond what concurrency needs --------------------


def where(name: str, seen: dict[str, asyncio.Task[Any] | None], value: Any = None) -> Node:
    async def run(results: Mapping[str, Any]) -> Any:
        seen[name] = asyncio.current_task()
        return value if value is not None else name

    return Node(name, (), 5.0, run)


async def test_no_nodes_no_outcomes() -> None:
    """An endpoint whose every call runs in the background leaves `execute` nothing to run."""
    loop = asyncio.get_running_loop()
    assert await execute([], loop.time() + 5) == {}


async def test_a_lone_node_runs_in_the_callers_task() -> None:
    seen: dict[str, asyncio.Task[Any] | None] = {}
    loop = asyncio.get_running_loop()
    outcomes = await execute([where("only", seen)], loop.time() + 5)
    assert outcomes["only"].value == "only"
    assert seen["only"] is asyncio.current_task()


async def test_independent_nodes_run_concurrently_the_last_in_the_callers_task() -> None:
    gate = asyncio.Event()
    seen: dict[str, asyncio.Task[Any] | None] = {}

    async def waits(results: Mapping[str, Any]) -> Any:
        seen["waits"] = asyncio.current_task()
        await gate.wait()  # opened by the last node: they run at the same time
        return "waited"

    async def opens(results: Mapping[str, Any]) -> Any:
        seen["opens"] = asyncio.current_task()
        await asyncio.sleep(0)  # the other task starts while this one waits
        gate.set()
        return "opened"

    loop = asyncio.get_running_loop()
    outcomes = await execute(
        [Node("waits", (), 5, waits), where("plain", seen, 7), Node("opens", (), 5, opens)],
        loop.time() + 5,
    )
    assert list(outcomes) == ["waits", "plain", "opens"]
    assert [o.value for o in outcomes.values()] == ["waited", 7, "opened"]
    assert seen["opens"] is asyncio.current_task()
    tasks = [seen["waits"], seen["plain"]]
    assert all(t is not None and t is not asyncio.current_task() for t in tasks)
    assert [t.get_name() for t in tasks if t is not None] == ["call:waits", "call:plain"]


async def test_a_bug_in_a_lone_node_propagates_as_it_is() -> None:
    async def buggy(results: Mapping[str, Any]) -> Any:
        raise KeyError("bug")

    loop = asyncio.get_running_loop()
    with pytest.raises(KeyError):
        await execute([Node("bug", (), 5, buggy)], loop.time() + 5)


async def test_a_node_bounded_within_the_deadline_gets_no_second_timer() -> None:
    """`bounded` says the node's own (policy) timeout ends it first: execute then arms no
    timer of its own, so a node claiming a bound it does not keep outlives the deadline. A
    bound that does not end before the deadline, or none, keeps execute's timer."""
    loop = asyncio.get_running_loop()
    for bound, survives in ((0.001, True), (60.0, False), (None, False)):
        gate = asyncio.Event()

        async def late(results: Mapping[str, Any], gate: asyncio.Event = gate) -> Any:
            await gate.wait()
            return "late"

        opener = loop.call_later(0.3, gate.set)  # after the 0.05 s deadline
        outcomes = await execute([Node("n", (), 60, late, bound)], loop.time() + 0.05)
        opener.cancel()
        if survives:
            assert outcomes["n"].value == "late", bound
        else:
            error = outcomes["n"].error
            assert isinstance(error, CallTimeout) and "endpoint deadline" in str(error), bound


@pytest.mark.parametrize(
    ("call", "bound"),
    [
        ("{name: a, backend: c, path: /a}", 2.0),
        ("{name: a, backend: c, path: /a, timeout: 500ms}", 0.5),
        ("{name: a, backend: c, path: /a, retry: {attempts: 3}}", None),
        ("{name: a, backend: c, method: POST, path: /a, retry: {attempts: 3}}", 2.0),  # once
        ("{name: a, backend: c, path: /a, hedge: {after: 10ms, max: 1}}", None),
        ("{name: a, backend: c, path: /a, coalesce: true}", None),
        ("{name: a, backend: c, path: /a, cache: {ttl: 1s}}", None),
    ],
)
def test_a_call_tried_once_under_its_timeout_is_bounded_by_it(
    call: str, bound: float | None
) -> None:
    """What `execute` may trust (Node.bounded): only a chain that tries once and waits for
    nothing else ends within its per-try timeout."""
    backends = 'version: 1\nbackends: {c: {kind: http, url: "http://127.0.0.1:1", timeout: 2s}}\n'
    text = backends + f"endpoints:\n  - path: /x\n    method: POST\n    calls:\n      - {call}\n"
    spec = parse_spec(text, "t.yaml")
    plan = plan_endpoint(spec.endpoints[0], spec.backends, traits_of)
    assert single_try_bound(plan.calls[0]) == bound


def test_a_for_each_call_is_not_bounded_by_one_timeout() -> None:
    text = """version: 1
backends: {c: {kind: http, url: "http://127.0.0.1:1"}}
endpoints:
  - path: /x
    calls:
      - {name: page, backend: c, path: /page}
      - {name: each, backend: c, path: "/i/{item.id}", for_each: calls.page, into: item}
"""
    spec = parse_spec(text, "t.yaml")
    plan = plan_endpoint(spec.endpoints[0], spec.backends, traits_of)
    assert single_try_bound(plan.calls[0]) is not None
    assert single_try_bound(plan.calls[1]) is None


# --- nodes ready at once (a cache hit): settled before anything runs ------------------------


def ready_node(
    name: str,
    needs: tuple[str, ...],
    ready: Any,
    ran: list[str],
    seen: dict[str, asyncio.Task[Any] | None] | None = None,
) -> Node:
    async def run(results: Mapping[str, Any]) -> Any:
        ran.append(name)
        if seen is not None:
            seen[name] = asyncio.current_task()
        return f"{name} ran"

    return Node(name, needs, 5.0, run, None, ready)


async def test_ready_nodes_and_their_ready_dependants_are_settled_without_running() -> None:
    ran: list[str] = []
    seen: dict[str, asyncio.Task[Any] | None] = {}
    asked: list[Mapping[str, Any]] = []

    def product(results: Mapping[str, Any]) -> tuple[Any] | None:
        return ({"author_id": 7},)

    def author(results: Mapping[str, Any]) -> tuple[Any] | None:
        asked.append(dict(results))
        return ({"author": results["product"]["author_id"]},)

    loop = asyncio.get_running_loop()
    outcomes = await execute(
        [
            # listed before what it needs: settling goes round until nothing more is ready
            ready_node("author", ("product",), author, ran),
            ready_node("product", (), product, ran),
            where("reviews", seen),
        ],
        loop.time() + 5,
    )
    assert ran == []
    assert asked == [{"product": {"author_id": 7}}]
    assert outcomes["author"].value == {"author": 7}
    assert list(outcomes) == ["author", "product", "reviews"]  # the nodes' order
    # what is left has nothing to wait for: it runs in the caller's task
    assert seen["reviews"] is asyncio.current_task()


async def test_a_node_not_ready_runs_once_and_is_asked_once() -> None:
    ran: list[str] = []
    asked: list[str] = []

    def not_yet(results: Mapping[str, Any]) -> tuple[Any] | None:
        asked.append("miss")
        return None

    def hit(results: Mapping[str, Any]) -> tuple[Any] | None:
        return (1,)

    loop = asyncio.get_running_loop()
    outcomes = await execute(
        [ready_node("miss", (), not_yet, ran), ready_node("hit", (), hit, ran)], loop.time() + 5
    )
    assert asked == ["miss"] and ran == ["miss"]
    assert outcomes["miss"].value == "miss ran" and outcomes["hit"].value == 1


async def test_a_ready_node_may_fail_and_a_dependant_of_a_running_node_waits_for_it() -> None:
    ran: list[str] = []

    def broken(results: Mapping[str, Any]) -> tuple[Any] | None:
        raise BadStatus("no", status=502)

    def needs_slow(results: Mapping[str, Any]) -> tuple[Any] | None:
        return (results["slow"] + 1,)

    async def slow(results: Mapping[str, Any]) -> Any:
        await asyncio.sleep(0)  # it waits once, so the graph really runs concurrently
        return 41

    loop = asyncio.get_running_loop()
    outcomes = await execute(
        [
            ready_node("broken", (), broken, ran),
            ready_node("skipped", ("broken",), needs_slow, ran),
            Node("slow", (), 5.0, slow),
            ready_node("after", ("slow",), needs_slow, ran),
        ],
        loop.time() + 5,
    )
    assert isinstance(outcomes["broken"].error, BadStatus)
    skipped = outcomes["skipped"].error
    assert isinstance(skipped, Skipped) and skipped.cause == "broken"
    # `after` needed a call that had to run: it ran after it, as a node always did
    assert ran == ["after"] and outcomes["after"].value == "after ran"


async def test_a_graph_runs_its_last_node_in_the_callers_task_the_others_in_tasks() -> None:
    seen: dict[str, asyncio.Task[Any] | None] = {}

    async def needs_both(results: Mapping[str, Any]) -> Any:
        seen["last"] = asyncio.current_task()
        return [results["first"], results["second"]]

    loop = asyncio.get_running_loop()
    first, second = where("first", seen), where("second", seen)
    outcomes = await execute(
        [
            first,
            Node("second", ("first",), 5, second.run),
            Node("last", ("second",), 5, needs_both),
        ],
        loop.time() + 5,
    )
    assert [o.value for o in outcomes.values()] == ["first", "second", ["first", "second"]]
    assert seen["last"] is asyncio.current_task()
    tasks = [seen["first"], seen["second"]]
    assert all(t is not None and t is not asyncio.current_task() for t in tasks)
    assert [t.get_name() for t in tasks if t is not None] == ["call:first", "call:second"]


async def test_a_graph_skips_its_last_node_when_a_call_it_needs_failed() -> None:
    async def fails(results: Mapping[str, Any]) -> Any:
        raise BadStatus("down", status=503)

    loop = asyncio.get_running_loop()
    outcomes = await execute(
        [Node("first", (), 5, fails), Node("then", ("first",), 5, fails)], loop.time() + 5
    )
    assert isinstance(outcomes["first"].error, BadStatus)
    assert isinstance(outcomes["then"].error, Skipped) and outcomes["then"].error.cause == "first"


# --- one timer or two: what a cut says, and what the breaker counts --------------------------


def _hung_host(breaker: Breaker, per_try: float) -> Call:
    """A backend that never answers, behind the chain a breaker makes (breaker, then the
    per-try timeout, innermost)."""

    async def hangs(request: BackendRequest) -> BackendResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return guarded("b", [(breaker, timeout(per_try)(hangs))], on_reject=lambda: None)


@pytest.mark.parametrize(
    ("per_try", "deadline", "bounded", "says", "counted"),
    [
        # the per-try timeout ends first: the call's own timeout, a failure of the host,
        # with execute's timer (a retried call: not bounded) or without (bounded by it)
        (0.01, 5.0, 0.01, "timeout of 0.01s", True),
        (0.01, 5.0, None, "timeout of 0.01s", True),
        # the deadline ends first: the endpoint's, and the host is not blamed for it
        (5.0, 0.01, 5.0, "endpoint deadline", False),
        (5.0, 0.01, None, "endpoint deadline", False),
    ],
)
async def test_a_cut_is_the_first_timeout_to_pass_and_only_a_try_timeout_is_counted(
    per_try: float, deadline: float, bounded: float | None, says: str, counted: bool
) -> None:
    breaker = Breaker("b", "h", BreakerSpec(failures=1, window=60, cooldown=60), lambda *_: None)
    call = _hung_host(breaker, per_try)
    loop = asyncio.get_running_loop()
    ends = loop.time() + deadline

    async def run(results: Mapping[str, Any]) -> Any:
        return (await call(BackendRequest(deadline=ends))).body

    outcomes = await execute([Node("n", (), 60, run, bounded)], ends)
    error = outcomes["n"].error
    assert isinstance(error, CallTimeout) and says in str(error)
    assert breaker.state == ("open" if counted else "closed")
