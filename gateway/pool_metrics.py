"""/metrics for the legacy thread pools and the compute process pool, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.backends.pools import PoolStats


class PoolCollector(Collector):
    """Busy workers, queued calls, refusals and replacements of every pool of one app."""

    def __init__(self, pools: Mapping[str, PoolStats]) -> None:
        self.pools = pools  # the app's live dict, filled in by the lifespan

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
