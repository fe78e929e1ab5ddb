"""Prometheus metrics of authentication and rate limits, on the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class GuardMetrics:
    """Counters and gauges of authenticators, JWKS fetches and rate limits."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.auth = Counter(
            "gateway_auth_requests",
            "Authentication outcomes by authenticator: accepted, rejected (401), missing "
            "(no credential, 401), forbidden (403), unavailable (key store down, 503).",
            ["authenticator", "outcome"],
            registry=r,
        )
        self.auth_cache = Gauge(
            "gateway_auth_cache_entries",
            "Verified tokens or looked-up keys remembered, by authenticator.",
            ["authenticator"],
            registry=r,
        )
        self.jwks_fetches = Counter(
            "gateway_jwks_fetches",
            "JWKS fetches by authenticator and outcome (ok, failed).",
            ["authenticator", "outcome"],
            registry=r,
        )
        self.rate_limited = Counter(
            "gateway_rate_limit_requests",
            "Rate-limit decisions by limit: allowed, or limited (429).",
            ["limit", "decision"],
            registry=r,
        )
        self.rate_limit_keys = Gauge(
            "gateway_rate_limit_keys",
            "Per-process buckets held, by limit (bounded by GATEWAY_RATE_LIMIT_MAX_KEYS).",
            ["limit"],
            registry=r,
        )
        self.fallback = Gauge(
            "gateway_rate_limit_fallback",
            "1 while Redis is unreachable and this process limits alone, else 0.",
            registry=r,
        )
        self.fallbacks = Counter(
            "gateway_rate_limit_fallbacks",
            "Times this process lost Redis and fell back to its own buckets.",
            registry=r,
        )
        self.local_takes = Counter(
            "gateway_rate_limit_local_takes",
            "Takes decided by this process alone though a cluster store is configured, by "
            "reason: fallback (Redis unreachable), busy (no free Redis connection in time).",
            ["reason"],
            registry=r,
        )
        self.leased_takes = Counter(
            "gateway_rate_limit_leased_takes",
            "Takes served from a lease: shared tokens this process took from Redis ahead of "
            "its requests (cluster.lease), spent without a round trip.",
            registry=r,
        )
