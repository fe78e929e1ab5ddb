"""Legacy backends: a blocking Python client run on a dedicated, bounded thread pool.

The event loop must never block, so each call runs with `run_in_executor`-style submission on
the backend's own `ThreadPoolExecutor` (not the loop's default one, which other code shares and
which holds only min(32, CPUs + 4) threads). `PoolStats` bounds the calls admitted to
threads + queue and refuses the rest at once.

A call that times out answers at once (execute's timeout cancels the wait), but its thread
cannot be interrupted: it keeps its slot until the blocking function returns. The thread runs
in a copy of the caller's context, so `current_request_id` is visible to the client's logs.

The client's result is encoded to JSON in the thread, so an unusable result fails that call
(BadBody) and the loop only decodes bytes. Whatever the client raises is that backend's failure,
never the gateway's: OSError (refused, reset, socket timeout) -> UpstreamUnavailable, anything
else -> TargetFailed.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from gateway.backends.pools import PoolStats
from gateway.errors import BadBody, TargetFailed, UpstreamUnavailable
from gateway.spec import LegacyBackend
from gateway.targets import is_class, resolve
from gateway.types import BackendRequest, BackendResponse, Call

log = logging.getLogger("gateway.legacy")
T = TypeVar("T")
Invoke = Callable[[str, Mapping[str, Any]], Any]
"""(method name, keyword arguments) -> the client's result."""


class ThreadPool:
    """One legacy backend's threads, with admission and busy/queue accounting."""

    def __init__(self, name: str, threads: int, queue: int, retry_after: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"legacy-{name}")
        self.stats = PoolStats(name, threads, threads + queue, retry_after)

    def __repr__(self) -> str:
        return repr(self.stats)

    async def run(self, fn: Callable[[], T]) -> T:
        """Run `fn` on a pool thread in the caller's context; `Refused` when the pool is full."""
        stats = self.stats
        stats.admit()
        context = contextvars.copy_context()

        def work() -> T:
            stats.start()
            try:
                return context.run(fn)
            finally:
                stats.stop()

        try:
            future = self.executor.submit(work)
        except RuntimeError:  # shut down: the app is exiting
            stats.release()
            raise UpstreamUnavailable(f"{stats.name} is shutting down") from None
        # The slot is given back when the work has really ended (or was cancelled while still
        # queued), not when the caller stops waiting: that is what bounds a hung backend.
        future.add_done_callback(stats.release_when_done)
        return await asyncio.wrap_future(future)

    async def prestart(self) -> None:
        """Start every thread now: the executor would otherwise start them one by one on the
        event loop, in the middle of the first burst of calls."""
        barrier = threading.Barrier(self.stats.workers)
        # each task holds its thread until all have one, so no thread is reused
        started = [self.executor.submit(barrier.wait, 30) for _ in range(self.stats.workers)]
        await asyncio.gather(*(asyncio.wrap_future(f) for f in started))

    def shutdown(self) -> None:
        """Drop queued calls; running threads finish on their own (they cannot be stopped),
        and the interpreter waits for them at exit: a client's own timeout bounds that."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        log.info(
            "%s: thread pool shut down (%d calls still running)",
            self.stats.name,
            self.stats.running,
        )


async def open_legacy(name: str, spec: LegacyBackend, pool: ThreadPool) -> Invoke:
    """Resolve the target; a class is built once, on a pool thread (its __init__ may block)."""
    target = resolve(spec.target)
    options = dict(spec.options)
    if is_class(target):
        loop = asyncio.get_running_loop()
        client = await loop.run_in_executor(pool.executor, lambda: target(**options))

        def invoke_method(method: str, args: Mapping[str, Any]) -> Any:
            return getattr(client, method)(**args)

        return invoke_method

    def invoke_function(method: str, args: Mapping[str, Any]) -> Any:
        return target(**options, **args)

    return invoke_function


def legacy_call(name: str, pool: ThreadPool, invoke: Invoke) -> Call:
    """A `Call` running `invoke(request.method, request.args)` on the backend's threads."""

    def blocking(request: BackendRequest) -> bytes:
        try:
            result = invoke(request.method, request.args)
        except OSError as exc:
            raise UpstreamUnavailable(f"{name}: {type(exc).__name__}: {exc}") from None
        except Exception as exc:  # the client's own failure is this backend's failed call
            raise TargetFailed(f"{name}: {type(exc).__name__}: {exc}") from None
        try:
            return orjson.dumps(result)
        except TypeError as exc:
            raise BadBody(f"{name} returned a value that is not JSON: {exc}") from None

    async def call(request: BackendRequest) -> BackendResponse:
        data = await pool.run(lambda: blocking(request))
        return BackendResponse(200, orjson.loads(data))

    return call
