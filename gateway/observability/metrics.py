"""Prometheus metrics of one gateway app, in a registry of its own (tests build many apps)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from gateway.observability.multiprocess import group_registry
from gateway.observability.window import TrafficWindow
from gateway.server.protocol import CLIENT_CONNECTIONS
from gateway.server.refusals import REASONS, REFUSALS

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    """Every metric the gateway exports; one instance per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by endpoint template, method and status.",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "gateway_request_duration_seconds",
            "Request latency by endpoint template.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.call_latency = Histogram(
            "gateway_call_duration_seconds",
            "Backend call latency by endpoint, call and outcome.",
            ["endpoint", "call", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight", "Requests being served now.", registry=r
        )
        self.in_flight_peak = Gauge(
            "gateway_requests_in_flight_peak",
            "Most requests in flight at once since start.",
            registry=r,
        )
        self.shed = Counter(
            "gateway_shed_requests",
            "Requests refused with 503 because the process was full.",
            registry=r,
        )
        open_connections = Gauge(
            "gateway_open_connections", "Open client connections of this process.", registry=r
        )
        open_connections.set_function(lambda: CLIENT_CONNECTIONS.open)
        peak_connections = Gauge(
            "gateway_open_connections_peak",
            "Most client connections open at once since start.",
            registry=r,
        )
        peak_connections.set_function(lambda: CLIENT_CONNECTIONS.peak)
        self.for_each_elements = Counter(
            "gateway_for_each_elements",
            "Elements of for_each calls, by endpoint, call and outcome (ok or the error class).",
            ["endpoint", "call", "outcome"],
            registry=r,
        )
        self.for_each_requests = Counter(
            "gateway_for_each_requests",
            "Requests for_each calls sent (identical element requests are sent once).",
            ["endpoint", "call"],
            registry=r,
        )
        self.window = TrafficWindow(self.requests, self.request_latency, self.call_latency)
        """The last minute of the histograms above, for the status page."""

        r.register(ProtocolRefusals())
        self.exposed = self.registry
        """What /metrics answers: this process's registry, or the whole group's."""
        # The children of the per-request series, by label values. `labels(...)` costs
        # ~1.5 us a call (a lock, a tuple, str() of every value) and a request made two
        # to four of them; a dict hit is ~0.1 us. As many entries as the series have
        # children: endpoint templates, methods and statuses, never request values.
        self._answered: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._called: dict[tuple[str, str, str], Any] = {}

    def answered(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request (`gateway_requests`) and observe its latency."""
        key = (endpoint, method, status)
        children = self._answered.get(key)
        if children is None:
            children = self._answered[key] = (
                self.requests.labels(endpoint, method, str(status)),
                self.request_latency.labels(endpoint),
            )
        children[0].inc()
        children[1].observe(seconds)

    def called(self, endpoint: str, call: str, outcome: str, seconds: float) -> None:
        """Observe one backend call's latency (`gateway_call_duration_seconds`)."""
        key = (endpoint, call, outcome)
        child = self._called.get(key)
        if child is None:
            child = self._called[key] = self.call_latency.labels(endpoint, call, outcome)
        child.observe(seconds)

    def expose_group(self, directory: str) -> None:
        """Answer /metrics for every worker of `--workers N` (observability/multiprocess.py)."""
        self.exposed = group_registry(directory, self.registry)

    async def endpoint(self, request: Request) -> Response:
        """GET /metrics."""
        return Response(generate_latest(self.exposed), media_type=CONTENT_TYPE_LATEST)


class ProtocolRefusals(Collector):
    """`gateway_protocol_refusals_total{reason}`: what the HTTP server refused before the app
    ran (gateway/server/refusals.py), read from the process's counter when scraped."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "gateway_protocol_refusals",
            "Requests and connections the HTTP server refused before the app ran, by reason.",
            labels=["reason"],
        )
        for reason in REASONS:
            family.add_metric([reason], REFUSALS[reason])
        yield family
