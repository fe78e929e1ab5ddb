"""Run the calls of one request concurrently under one deadline; one `Outcome` per call.

Calls without `needs` start together; a call with `needs` starts as soon as the calls it
needs have finished, so latency follows the slowest chain, not the sum. Expected failures
(`CallError`, timeouts) become failed Outcomes instead of exceptions, because a failing
TaskGroup task would cancel its siblings and we want partial results. Anything else is a bug:
it cancels the group and propagates (-> 500). No task outlives `execute`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import CallError, CallTimeout, Skipped
from gateway.types import JSON


@dataclass(frozen=True, slots=True)
class Step:
    """A unit of work: `run` receives the results of finished steps, keyed by name."""

    name: str
    needs: tuple[str, ...]
    timeout: float
    run: Callable[[Mapping[str, Any]], Awaitable[JSON]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one call ended: a value, or the error that stands for it."""

    name: str
    elapsed: float
    value: JSON = None
    error: CallError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


async def execute(steps: Sequence[Step], deadline: float) -> dict[str, Outcome]:
    """Run every step; each is bounded by its own timeout and by `deadline` (loop time)."""
    loop = asyncio.get_running_loop()
    finished: dict[str, asyncio.Future[Outcome]] = {s.name: loop.create_future() for s in steps}
    results: dict[str, JSON] = {}

    async def run(step: Step) -> None:
        outcome = await _run_step(step, finished, results, deadline, loop)
        if outcome.ok:
            results[step.name] = outcome.value
        finished[step.name].set_result(outcome)

    async with asyncio.TaskGroup() as group:
        for step in steps:
            group.create_task(run(step), name=f"call:{step.name}")
    return {name: future.result() for name, future in finished.items()}


async def _run_step(
    step: Step,
    finished: Mapping[str, asyncio.Future[Outcome]],
    results: Mapping[str, JSON],
    deadline: float,
    loop: asyncio.AbstractEventLoop,
) -> Outcome:
    for need in step.needs:
        # awaiting a shared future never cancels it, so many dependants can wait on one call
        dependency = await finished[need]
        if not dependency.ok:
            return Outcome(
                step.name, 0.0, error=Skipped(f"skipped: needed call {need!r} failed", cause=need)
            )
    started = loop.time()
    budget = min(deadline, started + step.timeout)
    try:
        async with asyncio.timeout_at(budget):
            value = await step.run(results)
    except TimeoutError:
        limit = "endpoint deadline" if budget == deadline else f"timeout of {step.timeout:g}s"
        return Outcome(
            step.name, loop.time() - started, error=CallTimeout(f"no answer within the {limit}")
        )
    except CallError as exc:
        return Outcome(step.name, loop.time() - started, error=exc)
    return Outcome(step.name, loop.time() - started, value=value)
