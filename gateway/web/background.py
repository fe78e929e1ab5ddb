"""Background calls (`background: true`): run after the response is sent, never affecting it.

A request's background calls are handed over as one job once its last response byte was sent
(the response's Starlette `background` hook, which runs after the body: the client already
has its answer, and the request's own latency does not include them). The job runs as a task
of the app's `BackgroundCalls`, which bounds how many calls are pending at once
(`GATEWAY_BACKGROUND_CALLS`): a job that would go past it is dropped whole, and counted.
Each call is counted once in `gateway_background_calls_total{endpoint, call, outcome}`:
`ok`, `failed` (a failure, a skip because a call it needs failed, or cancelled at shutdown)
or `dropped`.

On shutdown the lifespan `drain`s the set before the backends close: pending calls get until
the end of the graceful timeout (counted from the drain's start, see `shutdown_deadline`),
so no accepted background call is lost on SIGTERM; what is still running then is cancelled,
counted failed, and logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.engine.execute import Outcome

log = logging.getLogger("gateway.background")

Job = Callable[[], Awaitable[Mapping[str, Outcome]]]
"""Runs one request's background calls; their outcomes by call name."""


class BackgroundCalls:
    """The app's pending background calls, at most `limit` at once."""

    def __init__(self, limit: int, registry: CollectorRegistry) -> None:
        self.limit = limit
        self.pending = 0  # calls, not jobs: the bound is on calls
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.counted = Counter(
            "gateway_background_calls",
            "Background calls by endpoint, call and outcome (ok, failed, dropped).",
            ["endpoint", "call", "outcome"],
            registry=registry,
        )
        pending = Gauge(
            "gateway_background_calls_pending",
            "Background calls accepted and not finished yet.",
            registry=registry,
        )
        pending.set_function(lambda: self.pending)

    def __repr__(self) -> str:
        return f"<BackgroundCalls [{self.pending}/{self.limit} pending]>"

    async def start(self, endpoint: str, names: tuple[str, ...], job: Job) -> None:
        """Start `job` (the calls `names` of a request to `endpoint`) unless the set is full
        or closed; never waits for it. Async so that Starlette calls it on the loop."""
        if self.closed or self.pending + len(names) > self.limit:
            for name in names:
                self.counted.labels(endpoint, name, "dropped").inc()
            log.warning(
                "%s: background calls %s dropped (%s)",
                endpoint,
                ", ".join(names),
                "shutting down" if self.closed else f"{self.pending}/{self.limit} pending",
            )
            return
        self.pending += len(names)
        task = asyncio.create_task(self._run(endpoint, names, job), name=f"background:{endpoint}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, endpoint: str, names: tuple[str, ...], job: Job) -> None:
        try:
            outcomes = await job()
        except asyncio.CancelledError:
            for name in names:
                self.counted.labels(endpoint, name, "failed").inc()
            raise
        except Exception:  # a bug in a task nobody awaits: logged here or never seen
            log.exception("%s: background calls %s crashed", endpoint, ", ".join(names))
            for name in names:
                self.counted.labels(endpoint, name, "failed").inc()
        else:
            for name in names:
                outcome = outcomes.get(name)
                ok = outcome is not None and outcome.ok
                self.counted.labels(endpoint, name, "ok" if ok else "failed").inc()
                if outcome is not None and not outcome.ok:
                    log.info("%s: background call %s failed: %s", endpoint, name, outcome.error)
        finally:
            self.pending -= len(names)

    async def settled(self, within: float) -> None:
        """Wait (at most `within` seconds) for the background calls running now: a reload's
        old backends close after them."""
        tasks = set(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=within)

    async def drain(self, deadline: float) -> None:
        """Refuse new jobs; wait for the pending ones until `deadline` (loop time), then
        cancel what is left."""
        self.closed = True
        tasks = set(self._tasks)
        if not tasks:
            return
        loop = asyncio.get_running_loop()
        log.info("waiting for %d background calls to finish", self.pending)
        _, unfinished = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
        if unfinished:
            log.warning(
                "%d background calls still running at the end of the graceful timeout: cancelled",
                self.pending,
            )
            for task in unfinished:
                task.cancel()
            await asyncio.wait(unfinished)
        else:
            log.info("background calls finished")


def shutdown_deadline(
    loop_now: float,
    monotonic_now: float,
    draining_since: float | None,
    drain_seconds: float,
    graceful_seconds: float,
) -> float:
    """The loop time by which background calls must be done on shutdown: the end of the
    graceful timeout that followed the drain period (when the process was signalled, at
    `draining_since`, monotonic time), else `graceful_seconds` from now."""
    if draining_since is None:
        return loop_now + graceful_seconds
    end = draining_since + drain_seconds + graceful_seconds
    return loop_now + max(0.0, end - monotonic_now)
