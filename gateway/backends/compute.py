"""Compute backends: CPU-bound functions on one shared process pool.

A thread would hold the GIL and stall the event loop and every other thread; a worker process
has its own interpreter. Workers are *spawned* (not forked): forking a process that runs an
event loop and threads copies locks in whatever state they were in.

The pool admits at most `workers + queue` calls (settings) and refuses the rest at once. When a
worker dies (killed, out of memory), `concurrent.futures` marks the whole pool broken and fails
every call it had: those calls answer 502 (UpstreamUnavailable) and the pool is replaced, so
the next calls run on fresh workers.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal

import orjson
from pydantic import Field

from gateway.backends.compute_worker import run_function, warm
from gateway.backends.imports import picklable_function, resolve_import
from gateway.backends.legacy import check_args, text_arguments
from gateway.backends.live import LiveBackend, OpenContext
from gateway.backends.pools import PoolStats, export_pool
from gateway.config.models import BackendSpec, CallSpec, Problem
from gateway.config.refs import RefScope
from gateway.config.values import ImportPath
from gateway.engine.plan import CallTraits
from gateway.errors import ImportPathError, UpstreamUnavailable
from gateway.observability.tracing import note
from gateway.types import BackendRequest, BackendResponse, Call

log = logging.getLogger("gateway.compute")


class ComputeBackend(BackendSpec):
    """A CPU-bound, picklable function run on the shared process pool."""

    kind: Literal["compute"]
    import_path: ImportPath = Field(
        alias="target", description="A module-level function, called with `args`."
    )


class ProcessPool:
    """The process's one pool of compute workers, replaced when it breaks."""

    def __init__(self, workers: int, queue: int, retry_after: int) -> None:
        self.workers = workers
        self.stats = PoolStats(
            "compute", workers, workers + queue, retry_after, tracks_running=False
        )
        self.executor = self._new_executor()

    def __repr__(self) -> str:
        return repr(self.stats)

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        # Many calls see the same broken pool; only the first replaces it.
        if self.executor is broken:
            self.executor = self._new_executor()
            self.stats.replaced += 1
            broken.shutdown(wait=False, cancel_futures=True)
            log.warning("a compute worker died; the process pool was replaced")

    async def warm(self, paths: tuple[str, ...]) -> None:
        """Start the workers and import the functions, so the first calls do not pay for it."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self.executor, warm, paths) for _ in range(self.workers))
        )

    async def run(self, path: str, args: Mapping[str, Any]) -> bytes:
        """`run_function(path, args)` in a worker; `Refused` when the pool is full."""
        self.stats.admit()
        # a worker process cannot report when it started: record what was ahead of the call
        note({"gateway.pool.queued": self.stats.queued, "gateway.pool.busy": self.stats.busy})
        executor = self.executor
        try:
            try:
                future = executor.submit(run_function, path, dict(args))
            except BrokenProcessPool:
                # broken before this call was sent: it never ran, so it may go to the new pool
                self._replace(executor)
                executor = self.executor
                future = executor.submit(run_function, path, dict(args))
        except (RuntimeError, BrokenProcessPool):  # shut down (the app is exiting) or broken
            self.stats.release()
            raise UpstreamUnavailable("the compute pool is not accepting calls") from None
        future.add_done_callback(self.stats.release_when_done)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._replace(executor)
            raise UpstreamUnavailable("the compute worker running this call died") from None

    async def aclose(self) -> None:
        """Drop queued calls and wait for the running ones, off the event loop."""
        await asyncio.to_thread(self.executor.shutdown, wait=True, cancel_futures=True)
        log.info("compute pool closed: %d worker processes stopped", self.workers)


def compute_call(path: str, pool: ProcessPool) -> Call:
    """A `Call` running the function at `path` with the request's `args` in a worker."""

    async def call(request: BackendRequest) -> BackendResponse:
        data = await pool.run(path, request.args)
        return BackendResponse(200, orjson.loads(data))

    return call


class ComputeKind:
    """`kind: compute` (see gateway/backends/registry.py)."""

    name = "compute"
    spec = ComputeBackend
    passthrough = False
    call_fields = frozenset({"method", "args"})

    def check(self, name: str, spec: ComputeBackend) -> list[Problem]:
        where = f"backends.{name}.target"
        try:
            function = resolve_import(spec.import_path)
        except ImportPathError as exc:
            return [(where, str(exc))]
        if not picklable_function(function):
            return [(where, "must be a module-level function (workers import it by name)")]
        return []

    def check_call(
        self, spec: ComputeBackend, call: CallSpec, where: str, scope: RefScope
    ) -> list[Problem]:
        problems = check_args(call, where, scope)
        if "method" in call.model_fields_set:
            problems.append((f"{where}.method", f"{spec.import_path!r} is a function: no `method`"))
        return problems

    def traits(self, spec: ComputeBackend, call: CallSpec) -> CallTraits:
        return CallTraits(
            method=call.method,
            arguments=text_arguments(call),
            attributes={"code.function.name": spec.import_path},
        )

    async def open(
        self, specs: Mapping[str, ComputeBackend], context: OpenContext
    ) -> dict[str, LiveBackend]:
        """One process pool for every compute backend of the app (processes are per
        machine), sized by the settings, opened with the first and closed with the app; the
        functions of these backends are imported in its workers now."""
        processes = context.shared.get("compute-pool")
        if not isinstance(processes, ProcessPool):
            settings = context.settings
            processes = ProcessPool(
                settings.compute_workers, settings.compute_queue, settings.retry_after_seconds
            )
            context.shared["compute-pool"] = processes
            context.lifetime.push_async_callback(processes.aclose)
            lifetime = OpenContext(context.lifetime, settings, context.registry, context.shared)
            export_pool(lifetime, "compute", processes.stats)
        await processes.warm(tuple(sorted({b.import_path for b in specs.values()})))
        live: dict[str, LiveBackend] = {}
        for name, spec in specs.items():
            call = compute_call(spec.import_path, processes)
            live[name] = LiveBackend(
                name=name,
                kind=self.name,
                call=call,
                hosts=((name, call),),
                usage=processes.stats.usage,
            )
        return live


KIND = ComputeKind()
