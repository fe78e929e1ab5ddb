"""Metrics of the whole process group under `gateway run --workers N`.

prometheus-client's multiprocess mode: every worker writes its counters and histograms to
memory-mapped files in one directory (`PROMETHEUS_MULTIPROC_DIR`), and whichever worker
answers `/metrics` sums the files of all of them. `gateway run` makes a fresh directory per
run (`group_metrics_directory`) before the workers start, so the mode does not depend on
how they are supervised (uvicorn's supervisor today): any supervisor whose workers inherit
the environment works, and the directory goes away when the run ends.

What cannot be summed stays per process: gauges read at scrape time (requests in flight,
open connections, pool use, breaker states, the loop's lag is a histogram and is summed)
come from the worker that answered, with a `pid` label saying which.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def group_metrics_directory(given: str | None) -> Iterator[str]:
    """The directory the workers share: `given` (the operator's, kept), or a fresh one that
    is removed afterwards. Set in the environment before any worker starts: a worker's
    prometheus-client picks its mode when it is imported."""
    if given is not None:
        yield given
        return
    path = tempfile.mkdtemp(prefix="fanout-metrics-")
    os.environ[ENVIRONMENT] = path
    try:
        yield path
    finally:
        os.environ.pop(ENVIRONMENT, None)
        shutil.rmtree(path, ignore_errors=True)


class GroupCollector(Collector):
    """Counters and histograms of every worker, summed; this worker's other metrics with a
    `pid` label."""

    def __init__(self, path: str, local: CollectorRegistry) -> None:
        self.group = MultiProcessCollector(None, path)  # type: ignore[no-untyped-call]
        self.local = local
        self.pid = str(os.getpid())

    def collect(self) -> Iterator[Metric]:
        summed: set[str] = set()
        for metric in self.group.collect():  # type: ignore[no-untyped-call]
            if metric.type == "gauge":
                continue  # per-process values: the local ones below are current
            summed.add(metric.name)
            yield metric
        for metric in self.local.collect():
            if metric.name in summed:
                continue
            labelled = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            labelled.samples = [
                sample._replace(labels={**sample.labels, "pid": self.pid})
                for sample in metric.samples
            ]
            yield labelled


def group_registry(path: str, local: CollectorRegistry) -> CollectorRegistry:
    """A registry to answer `/metrics` with the whole group (built once per app)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GroupCollector(path, local))
    return registry
