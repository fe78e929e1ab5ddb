"""Run the calls of one request concurrently under one deadline; one `Outcome` per call.

Calls without `needs` start together; a call with `needs` starts as soon as the calls it
needs have finished, so latency follows the slowest chain, not the sum. Expected failures
(`CallError`, timeouts) become failed Outcomes instead of exceptions, because a failing
TaskGroup task would cancel its siblings and we want partial results. Anything else is a bug:
it cancels the group and propagates (-> 500). No task outlives `execute`.

Two ways to run, one result: a graph with `needs` runs every node but the last in a task of
its own (the last in the caller's), each finished node announced through a future its
dependants await. Without `needs` (most endpoints) nothing waits for anything: the last
node runs in the caller's task and the others in tasks of a group (a lone node needs no
task at all), and no futures are made.
A node whose own timeout ends before the deadline (`Node.bounded`) gets no second timer
here: one timer per call, not two.

A node that can answer at once (`Node.ready`: a call whose fresh answer is in the process's
cache) is settled before anything starts, as are those of its dependants that can too; only
what is left runs as above. A cached product page then makes its one uncached call in the
caller's task: no task, future or timer for the hits (`python -m benchmarks.cache`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import field
from typing import Any

from gateway.errors import CallError, CallTimeout, Skipped
from gateway.timers import Timeouts
from gateway.types import JSON, record


@record
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
    ready: Callable[[Mapping[str, Any]], tuple[JSON] | None] | None = None
    """The node's value at once, without waiting for anything (wrapped in a 1-tuple: the
    value may be None), or None when it has to `run`; it may raise `CallError` as `run`
    does. Given the same results as `run` would be. None: the node always runs."""


@record
class Partial:
    """What a node that runs once per element (a `for_each` call) returns: the list of the
    elements' results (None for a failed one), the failures by element index, and how many
    requests it sent (identical element requests are sent once)."""

    value: list[JSON]
    failed_elements: Mapping[int, CallError]
    sent: int


@record
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


def execute(
    nodes: Sequence[Node],
    deadline: float,
    done: Mapping[str, Outcome] | None = None,
    timeouts: Timeouts | None = None,
) -> Awaitable[dict[str, Outcome]]:
    """Run every node; each is bounded by its own timeout and by `deadline` (loop time).

    `done` holds outcomes of calls that ran before (a background call needs the calls that
    answered the client): nodes may need them, and they are not returned again.
    `timeouts` keeps the nodes' deadline timers (an endpoint's own: its requests' deadlines
    end in the order they start); None: one shared by every caller.

    Called in a running loop; what it returns (a coroutine) is the run. A plain function
    that hands on the coroutine of the way it chose: every frame of a call's await chain
    is stepped through each time the call resumes, so the chain has no frame of its own.
    """
    loop = asyncio.get_running_loop()
    run = _Run(deadline, loop, timeouts if timeouts is not None else _DEADLINES)
    known = dict(done or {})
    settled = _settle(nodes, known, loop) if any(n.ready is not None for n in nodes) else {}
    if settled:
        return _execute_rest(nodes, settled, run, known)
    return _execute(nodes, run, known)


_DEADLINES = Timeouts()


class _Run:
    """What every node of one `execute` is run with."""

    __slots__ = ("deadline", "loop", "timeouts")

    def __init__(
        self, deadline: float, loop: asyncio.AbstractEventLoop, timeouts: Timeouts
    ) -> None:
        self.deadline = deadline
        self.loop = loop
        self.timeouts = timeouts


async def _execute_rest(
    nodes: Sequence[Node],
    settled: Mapping[str, Outcome],
    run: _Run,
    known: Mapping[str, Outcome],
) -> dict[str, Outcome]:
    """`execute` once some nodes have settled at once: the others run."""
    rest = [node for node in nodes if node.name not in settled]
    ran = await _execute(rest, run, known) if rest else {}
    return {node.name: settled.get(node.name) or ran[node.name] for node in nodes}


def _settle(
    nodes: Sequence[Node], known: dict[str, Outcome], loop: asyncio.AbstractEventLoop
) -> dict[str, Outcome]:
    """The outcomes of the nodes that are ready at once (added to `known` as they come, so
    a dependant of a ready node may be ready too)."""
    settled: dict[str, Outcome] = {}
    tried: set[str] = set()  # asked once: the results it depends on do not change
    progress = True
    while progress:
        progress = False
        for node in nodes:
            if node.ready is None or node.name in tried:
                continue
            if not all(need in known and known[need].ok for need in node.needs):
                continue  # waits for a call that runs, or is skipped the usual way
            tried.add(node.name)
            results = {name: outcome.value for name, outcome in known.items() if outcome.ok}
            started = loop.time()
            try:
                value = node.ready(results)
            except CallError as exc:
                outcome = Outcome(node.name, loop.time() - started, error=exc.with_traceback(None))
            else:
                if value is None:
                    continue
                outcome = Outcome(node.name, loop.time() - started, value=value[0])
            settled[node.name] = known[node.name] = outcome
            progress = True
    return settled


def _execute(
    nodes: Sequence[Node], run: _Run, known: Mapping[str, Outcome]
) -> Awaitable[dict[str, Outcome]]:
    """Run `nodes`, which may need the calls of `known` (finished already)."""
    if all(need in known for node in nodes for need in node.needs):
        return _execute_independent(nodes, run, known)
    return _execute_graph(nodes, run, known)


async def _execute_graph(
    nodes: Sequence[Node], run: _Run, known: Mapping[str, Outcome]
) -> dict[str, Outcome]:
    """`_execute` for nodes that need others of them: a task each, finished ones announced
    through futures."""
    loop = run.loop
    finished: dict[str, asyncio.Future[Outcome]] = {n.name: loop.create_future() for n in nodes}
    results: dict[str, JSON] = {}
    for name, outcome in known.items():
        finished[name] = loop.create_future()
        finished[name].set_result(outcome)
        if outcome.ok:
            results[name] = outcome.value

    async def run_one(node: Node) -> None:
        outcome = await _run_node(node, finished, results, run)
        if outcome.ok:
            results[node.name] = outcome.value
        finished[node.name].set_result(outcome)

    async with asyncio.TaskGroup() as group:
        for node in nodes[:-1]:
            group.create_task(run_one(node), name=f"call:{node.name}")
        # the last in this task (a task fewer): what it awaits are the others' futures,
        # and what awaits it, its own
        await run_one(nodes[-1])
    return {node.name: finished[node.name].result() for node in nodes}


async def _execute_independent(
    nodes: Sequence[Node], run: _Run, known: Mapping[str, Outcome]
) -> dict[str, Outcome]:
    """`execute` for nodes of which none needs another that is still to run (they may need
    the finished calls of `known`): the last runs in this task, the others in tasks of a
    group (they start as soon as it first waits)."""
    if not nodes:
        return {}  # an endpoint whose every call runs in the background
    finished: dict[str, asyncio.Future[Outcome]] = {}
    results: dict[str, JSON] = {}
    if known and any(node.needs for node in nodes):
        for name, outcome in known.items():
            finished[name] = run.loop.create_future()
            finished[name].set_result(outcome)
            if outcome.ok:
                results[name] = outcome.value
    if len(nodes) == 1:
        only = nodes[0]
        return {only.name: await _run_node(only, finished, results, run)}
    *others, last = nodes
    # each task runs the node itself, its Outcome the task's result: no wrapper coroutine
    # (a frame more in the await chain) to store it
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(_run_node(node, finished, results, run), name=f"call:{node.name}")
            for node in others
        ]
        outcome = await _run_node(last, finished, results, run)
    outcomes = {node.name: task.result() for node, task in zip(others, tasks, strict=True)}
    outcomes[last.name] = outcome
    return outcomes


async def _run_node(
    node: Node,
    finished: Mapping[str, asyncio.Future[Outcome]],
    results: Mapping[str, JSON],
    run: _Run,
) -> Outcome:
    for need in node.needs:
        # awaiting a shared future never cancels it, so many dependants can wait on one call
        dependency = await finished[need]
        if not dependency.ok:
            return Outcome(
                node.name, 0.0, error=Skipped(f"skipped: needed call {need!r} failed", cause=need)
            )
    loop, deadline = run.loop, run.deadline
    started = loop.time()
    budget = min(deadline, started + node.timeout)
    try:
        if node.bounded is not None and started + node.bounded < budget:
            value = await node.run(results)  # its own timeout ends it first
        else:
            with run.timeouts.scope(budget):
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
