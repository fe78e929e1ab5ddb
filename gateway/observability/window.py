"""The last minute of traffic, for the status page: requests/s, p50/p99 and error rate per
endpoint and per call, and the most recent failed requests.

Nothing is recorded per request for it: a task copies the cumulative Prometheus histograms
every `step` seconds (a dozen copies in a minute, bounded memory whatever the traffic), and
the window is the newest state minus the oldest copy. Quantiles are estimated inside the
histogram's buckets, the way Prometheus' `histogram_quantile` does, so they are as precise
as `LATENCY_BUCKETS`. Failed requests are noted by the handler that saw them fail (the
failure path only), in a bounded deque.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Histogram

Key = tuple[str, ...]
RECENT_FAILURES = 50
"""Failed requests the status page lists (the newest)."""


@dataclass(frozen=True, slots=True)
class Series:
    """Cumulative counts of one endpoint (or call): bucket counts by upper bound, errors."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    errors: float

    def minus(self, older: Series | None) -> Series:
        if older is None:
            return self
        before = dict(older.buckets)
        return Series(
            tuple((le, n - before.get(le, 0.0)) for le, n in self.buckets),
            self.count - older.count,
            self.errors - older.errors,
        )

    def quantile(self, q: float) -> float | None:
        """Seconds below which a share `q` of the observations fell (None: none at all)."""
        if self.count <= 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(le):
                    return lower  # beyond the last finite bucket: its bound is all we know
                width = cumulative - below
                return lower + (le - lower) * ((rank - below) / width if width else 1.0)
            lower, below = le, cumulative
        return lower


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float
    endpoints: dict[Key, Series]
    calls: dict[Key, Series]


def _series(histogram: Histogram, keys: tuple[str, ...], is_error: Any = None) -> dict[Key, Series]:
    """Sum a histogram's buckets by `keys` (other labels folded in); `is_error(labels)`
    says which observations count as errors."""
    buckets: dict[Key, dict[float, float]] = {}
    counts: dict[Key, float] = {}
    errors: dict[Key, float] = {}
    for metric in histogram.collect():
        for sample in metric.samples:
            key = tuple(sample.labels[k] for k in keys)
            if sample.name.endswith("_bucket"):
                bounds = buckets.setdefault(key, {})
                le = float(sample.labels["le"])
                bounds[le] = bounds.get(le, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                counts[key] = counts.get(key, 0.0) + sample.value
                if is_error is not None and is_error(sample.labels):
                    errors[key] = errors.get(key, 0.0) + sample.value
    return {
        key: Series(tuple(sorted(bounds.items())), counts.get(key, 0.0), errors.get(key, 0.0))
        for key, bounds in buckets.items()
    }


def _server_errors(requests: Counter) -> dict[Key, float]:
    errors: dict[Key, float] = {}
    for metric in requests.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["status"].startswith("5"):
                key = (sample.labels["endpoint"],)
                errors[key] = errors.get(key, 0.0) + sample.value
    return errors


@dataclass(slots=True)
class TrafficWindow:
    """Copies of the request and call histograms over the last `seconds`."""

    requests: Counter
    request_latency: Histogram
    call_latency: Histogram
    seconds: float = 60.0
    step: float = 5.0
    snapshots: deque[Snapshot] = field(default_factory=deque)
    failures: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_FAILURES))

    def snapshot(self) -> Snapshot:
        errors = _server_errors(self.requests)
        endpoints = {
            key: Series(s.buckets, s.count, errors.get(key, 0.0))
            for key, s in _series(self.request_latency, ("endpoint",)).items()
        }
        calls = _series(
            self.call_latency, ("endpoint", "call"), lambda labels: labels["outcome"] != "ok"
        )
        return Snapshot(time.monotonic(), endpoints, calls)

    def take(self) -> None:
        """Keep a copy of now; forget copies older than the window (plus one step)."""
        self.snapshots.append(self.snapshot())
        horizon = time.monotonic() - self.seconds - self.step
        while len(self.snapshots) > 1 and self.snapshots[0].at < horizon:
            self.snapshots.popleft()

    def summary(self) -> dict[str, list[dict[str, Any]]]:
        """Rates and quantiles since the oldest copy (about a minute ago), newest state now."""
        now = self.snapshot()
        base = self._base(now.at)
        span = max(1e-3, now.at - base.at) if base is not None else 1.0
        return {
            "endpoints": [
                _figures(
                    {"endpoint": key[0]}, s.minus(base.endpoints.get(key) if base else None), span
                )
                for key, s in sorted(now.endpoints.items())
            ],
            "calls": [
                _figures(
                    {"endpoint": key[0], "call": key[1]},
                    s.minus(base.calls.get(key) if base else None),
                    span,
                )
                for key, s in sorted(now.calls.items())
            ],
        }

    def _base(self, now: float) -> Snapshot | None:
        for snapshot in self.snapshots:
            if snapshot.at >= now - self.seconds - self.step:
                return snapshot
        return None

    def note_failure(
        self, request_id: str, endpoint: str, status: int, failed_calls: Iterable[str]
    ) -> None:
        """A request that failed (or answered partially), for the page's recent list."""
        self.failures.append(
            {
                "ts": time.time(),
                "request_id": request_id,
                "endpoint": endpoint,
                "status": status,
                "failed_calls": list(failed_calls),
            }
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Take a copy every `step` seconds while the block runs (the app's lifespan)."""

        async def every_step() -> None:
            while True:
                self.take()
                await asyncio.sleep(self.step)

        task = asyncio.create_task(every_step(), name="traffic-window")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _figures(labels: dict[str, str], series: Series, span: float) -> dict[str, Any]:
    p50, p99 = series.quantile(0.5), series.quantile(0.99)
    return {
        **labels,
        "rps": series.count / span,
        "p50_ms": p50 * 1000 if p50 is not None else None,
        "p99_ms": p99 * 1000 if p99 is not None else None,
        "error_rate": series.errors / series.count if series.count > 0 else 0.0,
        "requests": series.count,
    }
