"""Admission and accounting for the executors behind legacy (threads) and compute (processes).

An executor queues without bound, and a thread running a blocking call cannot be cancelled.
So each pool admits at most `workers + queue` calls and refuses the next one at once
(`Refused`, 503). A call keeps its slot until its work has *really* finished, not until its
caller stopped waiting: a hung legacy system can take its own pool, never more.

Counters change on the event loop (admission) and on worker or executor-manager threads
(completion), hence the lock. `/metrics` reads every pool of an app through one
`ExecutorPoolCollector`, at scrape time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.backends.live import OpenContext
from gateway.errors import Refused


@dataclass(slots=True, eq=False)
class PoolStats:
    """Live counters of one pool, read by /metrics and by `repr()`."""

    name: str
    workers: int
    capacity: int
    retry_after: int
    tracks_running: bool = True
    """Threads report when they start and stop; worker processes cannot."""
    admitted: int = 0
    """Calls submitted whose work has not finished: running plus queued."""
    running: int = 0
    """Calls a worker is executing now (threads count this themselves)."""
    refused: int = 0
    replaced: int = 0
    """Times a broken pool was replaced (compute only)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __repr__(self) -> str:
        return (
            f"<Pool {self.name} [{self.busy}/{self.workers} busy, {self.queued} queued, "
            f"{self.refused} refused]>"
        )

    @property
    def busy(self) -> int:
        """Workers occupied; for processes, estimated from the calls admitted."""
        return self.running if self.tracks_running else min(self.admitted, self.workers)

    @property
    def queued(self) -> int:
        return max(0, self.admitted - self.busy)

    def usage(self) -> dict[str, int]:
        """Busy and queued workers now, for the status page."""
        return {"busy": self.busy, "queued": self.queued, "workers": self.workers}

    def admit(self) -> None:
        """Take a slot, or raise `Refused` at once when every slot is taken."""
        with self._lock:
            if self.admitted >= self.capacity:
                self.refused += 1
                full = True
            else:
                self.admitted += 1
                full = False
        if full:
            raise Refused(
                f"{self.name} is at capacity ({self.workers} workers, "
                f"{self.capacity - self.workers} queued)",
                retry_after=self.retry_after,
            )

    def release(self) -> None:
        """Give a slot back: the call's work finished, failed, or was cancelled before it ran."""
        with self._lock:
            self.admitted -= 1

    def release_when_done(self, _: object) -> None:
        """`release` as a future's done callback."""
        self.release()

    def start(self) -> None:
        with self._lock:
            self.running += 1

    def stop(self) -> None:
        with self._lock:
            self.running -= 1


class ExecutorPoolCollector(Collector):
    """Busy workers, queued calls, refusals and replacements of every pool of one app."""

    def __init__(self) -> None:
        self.pools: dict[str, PoolStats] = {}

    def collect(self) -> Iterator[Metric]:
        labels = ["pool", "kind"]
        workers = GaugeMetricFamily("gateway_pool_workers", "Workers of the pool.", labels=labels)
        busy = GaugeMetricFamily(
            "gateway_pool_busy_workers",
            "Workers running a call, including calls whose caller timed out.",
            labels=labels,
        )
        queued = GaugeMetricFamily(
            "gateway_pool_queued_calls", "Calls admitted and waiting for a worker.", labels=labels
        )
        refused = CounterMetricFamily(
            "gateway_pool_refused_calls",
            "Calls refused at once (503) because workers and queue were full.",
            labels=labels,
        )
        replaced = CounterMetricFamily(
            "gateway_pool_replaced", "Broken pools replaced (a worker died).", labels=labels
        )
        for stats in list(self.pools.values()):
            values = [stats.name, "threads" if stats.tracks_running else "processes"]
            workers.add_metric(values, stats.workers)
            busy.add_metric(values, stats.busy)
            queued.add_metric(values, stats.queued)
            refused.add_metric(values, stats.refused)
            replaced.add_metric(values, stats.replaced)
        yield from (workers, busy, queued, refused, replaced)


def export_pool(context: OpenContext, key: str, stats: PoolStats) -> None:
    """Add a pool to the app's one `ExecutorPoolCollector` (registered with the first pool)
    until the backend's stack closes."""
    collector = context.shared.get("executor-pools")
    if not isinstance(collector, ExecutorPoolCollector):
        collector = context.shared["executor-pools"] = ExecutorPoolCollector()
        context.registry.register(collector)
    collector.pools[key] = stats
    context.stack.callback(collector.pools.pop, key, None)
