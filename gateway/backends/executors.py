"""Opening the legacy and compute backends: their pools enter the app's exit stack.

Each legacy backend gets a thread pool of its own (one slow system cannot take another's
threads); every compute backend shares one process pool sized from the settings, because
processes are per machine, not per backend.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

from gateway.backends.compute import ProcessPool, compute_call
from gateway.backends.legacy import ThreadPool, legacy_call, open_legacy
from gateway.backends.pools import PoolStats
from gateway.settings import Settings
from gateway.spec import ComputeBackend, GatewaySpec, LegacyBackend
from gateway.types import Call


async def open_executors(
    spec: GatewaySpec, stack: AsyncExitStack, settings: Settings
) -> tuple[dict[str, Call], dict[str, PoolStats]]:
    """A `Call` per legacy/compute backend, and the pools' stats by pool name (for /metrics)."""
    calls: dict[str, Call] = {}
    pools: dict[str, PoolStats] = {}
    for name, backend in spec.backends.items():
        if isinstance(backend, LegacyBackend):
            threads = ThreadPool(name, backend.threads, backend.queue, settings.retry_after_seconds)
            stack.callback(threads.shutdown)
            await threads.prestart()
            calls[name] = legacy_call(name, threads, await open_legacy(name, backend, threads))
            pools[f"legacy:{name}"] = threads.stats
    compute = {n: b for n, b in spec.backends.items() if isinstance(b, ComputeBackend)}
    if compute:
        processes = ProcessPool(
            settings.compute_workers, settings.compute_queue, settings.retry_after_seconds
        )
        stack.push_async_callback(processes.aclose)
        await processes.warm(tuple(sorted({b.target for b in compute.values()})))
        calls.update({n: compute_call(b.target, processes) for n, b in compute.items()})
        pools["compute"] = processes.stats
    return calls, pools
