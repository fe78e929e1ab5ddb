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
from gateway.metrics import GatewayMetrics
from gateway.plan import plan_endpoint
from gateway.problems import http_exception_handler, problem
from gateway.proxy import proxy_handler
from gateway.request_id import RequestIdMiddleware
from gateway.settings import Settings
from gateway.spec import GatewaySpec

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def create_app(spec: GatewaySpec, settings: Settings | None = None) -> Starlette:
    """Build the gateway for a validated spec. Backends open in the lifespan, not here."""
    settings = settings or Settings()
    metrics = GatewayMetrics()
    health = Health()
    backends = Backends()  # filled in by the lifespan; handlers read it per request

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
            handler = aggregation_handler(plan, backends, metrics, max_body)
            methods = [endpoint.method]
        routes.append(Route(endpoint.path, handler, methods=methods))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            opened = await open_backends(spec, stack)
            backends.calls.update(opened.calls)
            backends.upstreams.update(opened.upstreams)
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
