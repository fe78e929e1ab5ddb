"""Run the calls of one request concurrently under one deadline; one `Outcome` per call.

Calls without `needs` start together; a call with `needs` starts as soon as the calls it
needs have finished, so latency follows the slowest chain, not the sum. Expected failures
(`CallError`, timeouts) become failed Outcomes instead of exceptions, because a failing
TaskGroup task would cancel its siblings and we want partial results. Anything else is a bug:
it cancels the group and propagates (-> 500). No task outlives `execute`.

Two ways to run, one result: a graph with `needs` runs every node in a task of its own,
each finished node announced through a future its dependants await. Without `needs` (most
endpoints) nothing waits for anything: the last node runs in the caller's task and the
others in tasks of a group (a lone node needs no task at all), and no futures are made.
A node whose own timeout ends before the deadline (`Node.bounded`) gets no second timer
here: one timer per call, not two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import CallError, CallTimeout, Skipped
from gateway.types import JSON


@dataclass(frozen=True, slots=True)
class Node:
    """One node of the call graph: `run` receives the results of finished nodes, by name."""

    name: str
    needs: tuple[str, ...]
    timeout: float
    run: Callable[[Mapping[str, Any]], Awaitable[JSON]]
    """Returns the call's value, or a `Partial` for a call run once per element."""
    bounded: float | None = None
    """Seconds within which `run` ends by itself, a timeout included (a call whose only try
    is bounded by its policy timeout); None: unknown. When that ends before `timeout` and
    the deadline, `execute` arms no timer of its own for the node."""


@dataclass(frozen=True, slots=True)
class Partial:
    """What a node that runs once per element (a `for_each` call) returns: the list of the
    elements' results (None for a failed one), the failures by element index, and how many
    requests it sent (identical element requests are sent once)."""

    value: list[JSON]
    failed_elements: Mapping[int, CallError]
    sent: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one call ended: a value, or the error that stands for it."""

    name: str
    elapsed: float
    value: JSON = None
    error: CallError | None = None
    failed_elements: Mapping[int, CallError] = field(default_factory=dict)
    """A `for_each` call that succeeded for some elements only: the others, by index."""
    sent: int | None = None
    """A `for_each` call: the requests it sent (None for other calls)."""

    @property
    def ok(self) -> bool:
        return self.error is None


async def execute(
    nodes: Sequence[Node], deadline: float, done: Mapping[str, Outcome] | None = None
) -> dict[str, Outcome]:
    """Run every node; each is bounded by its own timeout and by `deadline` (loop time).

    `done` holds outcomes of calls that ran before (a background call needs the calls that
    answered the client): nodes may need them, and they are not returned again.
    """
    loop = asyncio.get_running_loop()
    if not done and not any(node.needs for node in nodes):
        return await _execute_independent(nodes, deadline, loop)
    finished: dict[str, asyncio.Future[Outcome]] = {n.name: loop.create_future() for n in nodes}
    results: dict[str, JSON] = {}
    for name, outcome in (done or {}).items():
        finished[name] = loop.create_future()
        finished[name].set_result(outcome)
        if outcome.ok:
            results[name] = outcome.value

    async def run(node: Node) -> None:
        outcome = await _run_node(node, finished, results, deadline, loop)
        if outcome.ok:
            results[node.name] = outcome.value
        finished[node.name].set_result(outcome)

    async with asyncio.TaskGroup() as group:
        for node in nodes:
            group.create_task(run(node), name=f"call:{node.name}")
    return {node.name: finished[node.name].result() for node in nodes}


async def _execute_independent(
    nodes: Sequence[Node], deadline: float, loop: asyncio.AbstractEventLoop
) -> dict[str, Outcome]:
    """`execute` for nodes of which none needs another: the last runs in this task, the
    others in tasks of a group (they start as soon as it first waits)."""
    results: dict[str, JSON] = {}  # no node reads another's: that would be a `needs`
    if not nodes:
        return {}  # an endpoint whose every call runs in the background
    if len(nodes) == 1:
        only = nodes[0]
        return {only.name: await _run_node(only, {}, results, deadline, loop)}
    outcomes: dict[str, Outcome] = {}

    async def run(node: Node) -> None:
        outcomes[node.name] = await _run_node(node, {}, results, deadline, loop)

    async with asyncio.TaskGroup() as group:
        for node in nodes[:-1]:
            group.create_task(run(node), name=f"call:{node.name}")
        await run(nodes[-1])
    return {node.name: outcomes[node.name] for node in nodes}


async def _run_node(
    node: Node,
    finished: Mapping[str, asyncio.Future[Outcome]],
    results: Mapping[str, JSON],
    deadline: float,
    loop: asyncio.AbstractEventLoop,
) -> Outcome:
    for need in node.needs:
        # awaiting a shared future never cancels it, so many dependants can wait on one call
        dependency = await finished[need]
        if not dependency.ok:
            return Outcome(
                node.name, 0.0, error=Skipped(f"skipped: needed call {need!r} failed", cause=need)
            )
    started = loop.time()
    budget = min(deadline, started + node.timeout)
    try:
        if node.bounded is not None and started + node.bounded < budget:
            value = await node.run(results)  # its own timeout ends it first
        else:
            async with asyncio.timeout_at(budget):
                value = await node.run(results)
    except TimeoutError:
        limit = "endpoint deadline" if budget == deadline else f"timeout of {node.timeout:g}s"
        return Outcome(
            node.name, loop.time() - started, error=CallTimeout(f"no answer within the {limit}")
        )
    except CallError as exc:
        # an expected failure, never shown with its traceback: without it the Outcome
        # keeps no frames alive (a for_each's whole element list, for one) until the
        # cycle collector's next pass (gateway/server/collector.py)
        return Outcome(node.name, loop.time() - started, error=exc.with_traceback(None))
    if isinstance(value, Partial):
        return Outcome(
            node.name,
            loop.time() - started,
            value=value.value,
            failed_elements=value.failed_elements,
            sent=value.sent,
        )
    return Outcome(node.name, loop.time() - started, value=value)
