"""Admission and accounting for every request: load shedding, in-flight gauge, request metrics.

Beyond `max_in_flight` requests the gateway answers 503 with Retry-After at once instead of
queueing: a fast refusal keeps the admitted requests' latency and the process's memory
bounded. Health and metrics routes are never shed, so probes keep telling the truth.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import GatewayMetrics
from gateway.problems import problem

UNSHED_PATHS = frozenset({"/livez", "/readyz", "/metrics"})


class AdmissionMiddleware:
    """Pure ASGI middleware; one instance per app."""

    def __init__(
        self, app: ASGIApp, *, metrics: GatewayMetrics, max_in_flight: int, retry_after: int
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.retry_after = str(retry_after)
        self.in_flight = 0
        self.peak = 0

    def __repr__(self) -> str:
        return f"<AdmissionMiddleware [in flight: {self.in_flight}/{self.max_in_flight}]>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNSHED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            self.metrics.shed.inc()
            response = problem(
                503,
                "the gateway is at capacity; retry later",
                headers={"Retry-After": self.retry_after},
            )
            await response(scope, receive, send)
            return
        self.in_flight += 1
        if self.in_flight > self.peak:
            self.peak = self.in_flight
            self.metrics.in_flight_peak.set(self.peak)
        self.metrics.in_flight.inc()
        status = 500
        started = time.perf_counter()

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
            self.metrics.request_latency.labels(endpoint).observe(time.perf_counter() - started)
