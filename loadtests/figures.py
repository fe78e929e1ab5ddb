"""The figures of a run, read from locust's CSV files and the gateway samples, and the SLO
checks over them. Pure functions of files: the report and the exit code both use them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from loadtests.sampler import Sample

SHED_NAME = "shed: 503 + Retry-After"  # as loadtests/locustfile.py names shed responses


@dataclass(frozen=True, slots=True)
class Row:
    """One line of locust's `_stats.csv`: a request name, or `Aggregated`."""

    name: str
    requests: int
    failures: int
    rps: float
    p50: float | None
    p95: float | None
    p99: float | None
    max_ms: float


@dataclass(frozen=True, slots=True)
class Figures:
    """What the verdict is decided on."""

    rows: list[Row]
    total: Row
    shed: Row | None  # the shed responses' own row, when shedding is counted apart
    peak_in_flight: float | None
    peak_connections: float | None
    peak_rss_bytes: int | None
    peak_fds: int | None
    peak_upstream_sockets: int | None
    recovery: str  # "200 in 12 ms", or what went wrong
    answers: dict[str, int] | None = None  # the gateway's own count by status, after the run

    @property
    def gateway_errors(self) -> int | None:
        """Requests the gateway answered with a 5xx (shed ones are not counted there)."""
        if self.answers is None:
            return None
        return sum(n for status, n in self.answers.items() if status.startswith("5"))

    @property
    def admitted(self) -> list[Row]:
        """The rows of requests the gateway admitted (every row but the shed one)."""
        return [r for r in self.rows if r.name != SHED_NAME]

    @property
    def admitted_p99(self) -> float | None:
        """p99 of the admitted requests: the whole run's when nothing was shed, else the
        worst route's (locust merges percentiles only over all names, shed ones included,
        which would hide slow admitted requests behind fast 503s)."""
        if self.shed is None:
            return self.total.p99
        p99s = [r.p99 for r in self.admitted if r.p99 is not None]
        return max(p99s) if p99s else None

    @property
    def shed_count(self) -> int:
        return 0 if self.shed is None else self.shed.requests

    @property
    def failure_ratio(self) -> float:
        return self.total.failures / self.total.requests if self.total.requests else 1.0

    @property
    def recovered(self) -> bool:
        return self.recovery.startswith("200 ") and "still in flight" not in self.recovery


def _number(text: str) -> float | None:
    return None if text in ("", "N/A") else float(text)


def read_stats(path: Path) -> list[Row]:
    """Rows of a locust `_stats.csv`, the `Aggregated` row last."""
    with path.open(newline="", encoding="utf-8") as f:
        return [
            Row(
                name=r["Name"],
                requests=int(r["Request Count"]),
                failures=int(r["Failure Count"]),
                rps=float(r["Requests/s"]),
                p50=_number(r["50%"]),
                p95=_number(r["95%"]),
                p99=_number(r["99%"]),
                max_ms=float(r["Max Response Time"]),
            )
            for r in csv.DictReader(f)
        ]


def summarise(
    stats_csv: Path, samples: list[Sample], recovery: str, answers: dict[str, int] | None = None
) -> Figures:
    rows = read_stats(stats_csv)
    total = next(r for r in rows if r.name == "Aggregated")

    def peak(values: list[float]) -> float | None:
        seen = [v for v in values if v >= 0]
        return max(seen) if seen else None

    rss = peak([s.rss_bytes for s in samples])
    fds = peak([s.open_fds for s in samples])
    upstream = peak([s.upstream_sockets for s in samples])
    return Figures(
        rows=[r for r in rows if r.name != "Aggregated"],
        total=total,
        shed=next((r for r in rows if r.name == SHED_NAME), None),
        # the gateway's own *_peak gauges, exact since its start; the last sample has the max
        peak_in_flight=peak([s.in_flight_peak for s in samples]),
        peak_connections=peak([s.open_connections_peak for s in samples]),
        peak_rss_bytes=None if rss is None else int(rss),
        peak_fds=None if fds is None else int(fds),
        peak_upstream_sockets=None if upstream is None else int(upstream),
        recovery=recovery,
        answers=answers,
    )


@dataclass(frozen=True, slots=True)
class Limits:
    """The SLOs of a run; None: not checked."""

    max_failure_ratio: float
    max_p99_ms: float | None
    min_peak_in_flight: int | None
    min_peak_connections: int | None
    min_shed: int | None


def check(figures: Figures, limits: Limits) -> list[str]:
    """The failed checks, each naming its option; empty when the run passed."""
    failed: list[str] = []
    if figures.total.requests == 0:
        failed.append("requests: none were made")
    if figures.failure_ratio > limits.max_failure_ratio:
        failed.append(
            f"max-failure-ratio: {figures.total.failures} of {figures.total.requests} failed "
            f"({figures.failure_ratio:.4%} > {limits.max_failure_ratio:.4%})"
        )
    errors, answered = figures.gateway_errors, sum((figures.answers or {}).values())
    if errors is not None and answered and errors / answered > limits.max_failure_ratio:
        failed.append(
            f"max-failure-ratio (gateway): it answered {errors} of {answered} requests with a 5xx"
        )
    p99 = figures.admitted_p99
    if limits.max_p99_ms is not None and (p99 is None or p99 > limits.max_p99_ms):
        measured = "not measured" if p99 is None else f"{p99:g} ms"
        failed.append(f"max-p99-ms: p99 of admitted requests {measured} > {limits.max_p99_ms:g} ms")
    for option, seen, wanted in (
        ("min-peak-in-flight", figures.peak_in_flight, limits.min_peak_in_flight),
        ("min-peak-connections", figures.peak_connections, limits.min_peak_connections),
        ("min-shed", figures.shed_count, limits.min_shed),
    ):
        if wanted is not None and (seen is None or seen < wanted):
            failed.append(f"{option}: {seen if seen is not None else 'not measured'} < {wanted}")
    if not figures.recovered:
        failed.append(f"recovery: a request after the run got {figures.recovery}")
    return failed
