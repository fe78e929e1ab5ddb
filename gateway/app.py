"""`create_app(spec, settings)` -> a Starlette app whose lifespan owns every client and pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admission import AdmissionMiddleware
from gateway.aggregate import aggregation_handler
from gateway.backends import Backends, open_backends
from gateway.health import Health
from gateway.loop_lag import lag_histogram, monitoring_lag
from gateway.metrics import GatewayMetrics
from gateway.plan import plan_endpoint
from gateway.policies import Resilience
from gateway.policies.metrics import PolicyMetrics
from gateway.pool_metrics import PoolCollector
from gateway.pool_watch import watch_pools
from gateway.problems import http_exception_handler, problem
from gateway.proxy import proxy_handler
from gateway.request_id import RequestIdMiddleware
from gateway.settings import Settings
from gateway.spec import GatewaySpec
from gateway.stream import is_stream_endpoint, stream_handler

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def create_app(spec: GatewaySpec, settings: Settings | None = None) -> Starlette:
    """Build the gateway for a validated spec. Backends open in the lifespan, not here."""
    settings = settings or Settings()
    metrics = GatewayMetrics()
    health = Health()
    backends = Backends()  # filled in by the lifespan; handlers read it per request
    resilience = Resilience(PolicyMetrics(metrics.registry))  # opened in the lifespan too
    metrics.registry.register(PoolCollector(backends.pools))
    loop_lag = lag_histogram(metrics.registry)
    postgres = [name for name, b in spec.backends.items() if b.kind == "postgres"]
    if postgres:
        watch_pools(backends.postgres, postgres, health, metrics.registry)

    routes = [
        Route("/livez", health.livez, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]
    for endpoint in spec.endpoints:
        max_body = (
            int(endpoint.max_body) if endpoint.max_body is not None else settings.max_body_bytes
        )
        if endpoint.proxy is not None:
            backend = spec.backends[endpoint.proxy.backend]
            handler = proxy_handler(endpoint, endpoint.proxy, backends, backend.timeout, max_body)
            # a passthrough forwards every method unless the config names one
            methods = [endpoint.method] if "method" in endpoint.model_fields_set else ALL_METHODS
        else:
            plan = plan_endpoint(endpoint, spec.backends)
            handler = (
                stream_handler(plan, backends)
                if is_stream_endpoint(endpoint)
                else aggregation_handler(plan, backends, metrics, max_body, resilience)
            )
            methods = [endpoint.method]
        routes.append(Route(endpoint.path, handler, methods=methods))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            opened = await open_backends(spec, stack, settings)
            # measured once serving starts: opening backends may block briefly, on purpose
            await stack.enter_async_context(
                monitoring_lag(
                    loop_lag.observe,
                    settings.loop_lag_interval_seconds,
                    settings.loop_lag_warn_seconds,
                )
            )
            backends.postgres.update(opened.postgres)
            backends.calls.update(opened.calls)
            backends.upstreams.update(opened.upstreams)
            backends.pools.update(opened.pools)
            resilience.open(spec, backends)
            health.state = "ready"
            yield
            health.state = "draining"

    async def server_error(request: Request, exc: Exception) -> Response:
        return problem(500, "internal error; see the gateway log for the request id")

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(
                AdmissionMiddleware,
                metrics=metrics,
                max_in_flight=settings.max_in_flight,
                retry_after=settings.retry_after_seconds,
            ),
        ],
        exception_handlers={HTTPException: http_exception_handler, Exception: server_error},
    )
    app.state.health = health
    app.state.metrics = metrics
    app.state.backends = backends
    return app
