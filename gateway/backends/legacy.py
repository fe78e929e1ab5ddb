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
else -> FunctionFailed.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import orjson
from pydantic import Field

from gateway.backends.imports import has_method, is_class, resolve_import
from gateway.backends.live import LiveBackend, OpenContext
from gateway.backends.pools import PoolStats, export_pool
from gateway.config.models import BackendSpec, CallSpec, Problem
from gateway.config.refs import RefScope, check_template
from gateway.config.values import ImportPath
from gateway.engine.plan import CallTraits, TextArguments
from gateway.engine.templates import parse_template
from gateway.errors import BadBody, FunctionFailed, ImportPathError, UpstreamUnavailable
from gateway.observability.tracing import note
from gateway.types import BackendRequest, BackendResponse, Call

log = logging.getLogger("gateway.legacy")


class LegacyBackend(BackendSpec):
    """A blocking Python client run in a bounded thread pool of its own."""

    kind: Literal["legacy"]
    import_path: ImportPath = Field(
        alias="target",
        description="A class (built once with `options` as keyword arguments; calls name a "
        "`method`) or a function (called with `options` and the call's `args`).",
    )
    options: dict[str, Any] = Field(default_factory=dict)
    threads: int = Field(default=8, ge=1, le=1024, description="Threads of this backend's pool.")
    queue: int = Field(
        default=0, ge=0, description="Calls waiting for a thread; beyond it calls get 503."
    )


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
        submitted = time.perf_counter()

        def work() -> T:
            stats.start()
            # the try's span is current in `context`: record how long the call queued
            waited_ms = (time.perf_counter() - submitted) * 1e3
            context.run(note, {"gateway.pool.queue_wait_ms": waited_ms})
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
    """Resolve the import path; a class is built once, on a pool thread (its __init__ may
    block), a function is called with `options` and the call's args."""
    found = resolve_import(spec.import_path)
    options = dict(spec.options)
    if is_class(found):
        loop = asyncio.get_running_loop()
        client = await loop.run_in_executor(pool.executor, lambda: found(**options))

        def invoke_method(method: str, args: Mapping[str, Any]) -> Any:
            return getattr(client, method)(**args)

        return invoke_method

    def invoke_function(method: str, args: Mapping[str, Any]) -> Any:
        return found(**options, **args)

    return invoke_function


def legacy_call(name: str, pool: ThreadPool, invoke: Invoke) -> Call:
    """A `Call` running `invoke(request.method, request.args)` on the backend's threads."""

    def blocking(request: BackendRequest) -> bytes:
        try:
            result = invoke(request.method, request.args)
        except OSError as exc:
            raise UpstreamUnavailable(f"{name}: {type(exc).__name__}", details=str(exc)) from None
        except Exception as exc:  # the client's own failure is this backend's failed call
            # its message may name hosts or URLs the client uses: a detail, not the message
            raise FunctionFailed(f"{name}: {type(exc).__name__}", details=str(exc)) from None
        try:
            return orjson.dumps(result)
        except TypeError as exc:
            raise BadBody(f"{name} returned a value that is not JSON: {exc}") from None

    async def call(request: BackendRequest) -> BackendResponse:
        data = await pool.run(lambda: blocking(request))
        return BackendResponse(200, orjson.loads(data))

    return call


def check_args(call: CallSpec, where: str, scope: RefScope) -> list[Problem]:
    """The templates of a call's `args` (legacy and compute calls)."""
    problems: list[Problem] = []
    for key, text in call.args.items():
        problems += check_template(text, scope, f"{where}.args.{key}")[1]
    return problems


def text_arguments(call: CallSpec) -> TextArguments:
    """A legacy or compute call's `args`, rendered as text."""
    return TextArguments(tuple((k, parse_template(v)) for k, v in call.args.items()))


class LegacyKind:
    """`kind: legacy` (see gateway/backends/registry.py)."""

    name = "legacy"
    spec = LegacyBackend
    passthrough = False
    call_fields = frozenset({"method", "args"})

    def check(self, name: str, spec: LegacyBackend) -> list[Problem]:
        try:
            resolve_import(spec.import_path)
        except ImportPathError as exc:
            return [(f"backends.{name}.target", str(exc))]
        return []

    def check_call(
        self, spec: LegacyBackend, call: CallSpec, where: str, scope: RefScope
    ) -> list[Problem]:
        problems = check_args(call, where, scope)
        try:
            found = resolve_import(spec.import_path)
        except ImportPathError:
            return problems  # reported once, at the backend
        given = call.model_fields_set
        if is_class(found):
            if "method" not in given:
                problems.append((where, f"name the {found.__name__} method to call in `method`"))
            elif not has_method(found, call.method):
                problems.append(
                    (f"{where}.method", f"{found.__name__} has no method {call.method!r}")
                )
        elif "method" in given:
            problems.append((f"{where}.method", f"{spec.import_path!r} is a function: no `method`"))
        return problems

    def traits(self, spec: LegacyBackend, call: CallSpec) -> CallTraits:
        # a legacy method is a Python name, kept as it is
        return CallTraits(
            method=call.method,
            arguments=text_arguments(call),
            attributes={"code.function.name": f"{spec.import_path}.{call.method}"},
        )

    async def open(
        self, specs: Mapping[str, LegacyBackend], context: OpenContext
    ) -> dict[str, LiveBackend]:
        """A thread pool of its own per backend, all threads started now."""
        live: dict[str, LiveBackend] = {}
        retry_after = context.settings.retry_after_seconds
        for name, spec in specs.items():
            threads = ThreadPool(name, spec.threads, spec.queue, retry_after)
            context.stack.callback(threads.shutdown)
            await threads.prestart()
            call = legacy_call(name, threads, await open_legacy(name, spec, threads))
            export_pool(context, f"legacy:{name}", threads.stats)
            live[name] = LiveBackend(
                name=name,
                kind=self.name,
                call=call,
                hosts=((name, call),),
                usage=threads.stats.usage,
            )
        return live


KIND = LegacyKind()
