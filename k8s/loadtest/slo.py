"""The SLOs of a load test and the verdict on a run's totals: pure, no locust import.

The rules are those of the single-machine capacity runner (loadtests/figures.py): the share
of failed requests and the p99 latency. `slo_verdict.py` applies them when a locust run ends.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Slo:
    """What a run must achieve; None: not checked."""

    max_failure_ratio: float = 0.0
    max_p99_ms: float | None = None
    min_requests: int = 1


def verdict(requests: int, failures: int, p99_ms: float | None, slo: Slo) -> list[str]:
    """The SLOs a run missed, one line each, named as its option; empty when it passed."""
    missed = []
    if requests < slo.min_requests:
        missed.append(f"min-requests: {requests} requests < {slo.min_requests}")
    ratio = failures / requests if requests else 0.0
    if ratio > slo.max_failure_ratio:
        missed.append(
            f"max-failure-ratio: {failures} of {requests} failed "
            f"({ratio:.4%} > {slo.max_failure_ratio:.4%})"
        )
    if slo.max_p99_ms is not None and (p99_ms is None or p99_ms > slo.max_p99_ms):
        missed.append(f"max-p99-ms: p99 {p99_ms} ms > {slo.max_p99_ms:g} ms")
    return missed
