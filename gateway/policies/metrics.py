"""Prometheus metrics of the resilience policies, registered on the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

BREAKER_STATES = {"closed": 0, "open": 1, "half_open": 2}


class PolicyMetrics:
    """Counters and gauges of retries, breakers, bulkheads, hedges and coalescing."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.retries = Counter(
            "gateway_retries", "Retries sent, by backend.", ["backend"], registry=r
        )
        self.retry_budget_exhausted = Counter(
            "gateway_retry_budget_exhausted",
            "Retries not sent because the backend's retry budget was used up.",
            ["backend"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "gateway_breaker_state",
            "Circuit breaker state per backend host: 0 closed, 1 open, 2 half-open.",
            ["backend", "host"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "gateway_breaker_transitions",
            "Circuit breaker state changes, by the state entered.",
            ["backend", "host", "state"],
            registry=r,
        )
        self.circuit_open_rejected = Counter(
            "gateway_circuit_open_rejected",
            "Calls failed at once because every host's breaker was open.",
            ["backend"],
            registry=r,
        )
        self.bulkhead_rejected = Counter(
            "gateway_bulkhead_rejected",
            "Calls failed at once because the backend's concurrency cap was reached.",
            ["backend"],
            registry=r,
        )
        self.hedges_sent = Counter(
            "gateway_hedges_sent", "Hedged copies sent, by backend.", ["backend"], registry=r
        )
        self.hedges_won = Counter(
            "gateway_hedges_won",
            "Calls answered by a hedged copy rather than the first try.",
            ["backend"],
            registry=r,
        )
        self.coalesced = Counter(
            "gateway_coalesced_requests",
            "Calls that shared an identical in-flight upstream request instead of sending one.",
            ["backend"],
            registry=r,
        )
