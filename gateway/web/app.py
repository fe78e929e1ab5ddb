"""`create_app(spec, settings)`: the Starlette app, whose lifespan opens every backend and
builds every route once.

Endpoints are planned here, before serving (pure: templates parsed, defaults resolved); the
lifespan then opens the backends, wraps every call in its policies and builds each route
with its steps and its fully wired handler. Nothing is filled in later, on a request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route

from gateway.backends.live import LiveBackend, OpenContext
from gateway.backends.registry import open_backends, traits_of
from gateway.config.document import GatewaySpec
from gateway.config.models import EndpointSpec
from gateway.config.settings import Settings
from gateway.config.values import HTTP_METHODS
from gateway.engine.plan import EndpointPlan, plan_endpoint
from gateway.observability.loop_lag import lag_histogram, monitoring_lag
from gateway.observability.memory import trimming_memory
from gateway.observability.metrics import GatewayMetrics
from gateway.policies.chain import Resilience
from gateway.policies.metrics import PolicyMetrics
from gateway.web.aggregate import aggregation_handler
from gateway.web.body import body_limit
from gateway.web.edge import EdgeMiddleware
from gateway.web.forwarding import Forwarding, parse_trusted
from gateway.web.health import Health
from gateway.web.ndjson import stream_handler
from gateway.web.problems import http_exception_handler
from gateway.web.proxy import proxy_handler
from gateway.web.steps import Handler, Step, endpoint_route


def create_app(spec: GatewaySpec, settings: Settings | None = None) -> Starlette:
    """The gateway for a validated spec. Backends open in the lifespan, not here."""
    settings = settings or Settings()
    metrics = GatewayMetrics()
    health = Health()
    loop_lag = lag_histogram(metrics.registry)
    plans = {
        index: plan_endpoint(endpoint, spec.backends, traits_of)
        for index, endpoint in enumerate(spec.endpoints)
        if endpoint.proxy is None
    }
    operations: list[BaseRoute] = [
        Route("/livez", health.livez, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            context = OpenContext(stack, settings, metrics.registry)
            live = await open_backends(spec.backends, context)
            for name, backend in live.items():
                if backend.readiness is not None:
                    health.checks[f"{backend.kind}:{name}"] = backend.readiness
            resilience = Resilience(live, PolicyMetrics(metrics.registry))
            forwarding = Forwarding(parse_trusted(settings.trusted_proxies))
            wiring = _Wiring(spec, live, resilience, metrics, settings, forwarding)
            app.router.routes = [
                *operations,
                *(wiring.route(e, plans.get(i)) for i, e in enumerate(spec.endpoints)),
            ]
            # measured once serving starts: opening backends may block briefly, on purpose
            await stack.enter_async_context(
                monitoring_lag(
                    loop_lag.observe,
                    settings.loop_lag_interval_seconds,
                    settings.loop_lag_warn_seconds,
                )
            )
            await stack.enter_async_context(trimming_memory(settings.memory_trim_seconds))
            health.state = "ready"
            yield
            health.state = "draining"

    app = Starlette(
        routes=operations,
        lifespan=lifespan,
        middleware=[
            Middleware(
                EdgeMiddleware,
                metrics=metrics,
                max_in_flight=settings.max_in_flight,
                retry_after=settings.retry_after_seconds,
            ),
        ],
        exception_handlers={HTTPException: http_exception_handler},
    )
    app.state.health = health  # read by the server's drain (gateway/server/serve.py)
    return app


@dataclass(frozen=True, slots=True)
class _Wiring:
    """What the routes are built from, once the backends are open."""

    spec: GatewaySpec
    live: Mapping[str, LiveBackend]
    resilience: Resilience
    metrics: GatewayMetrics
    settings: Settings
    forwarding: Forwarding

    def route(self, endpoint: EndpointSpec, plan: EndpointPlan | None) -> Route:
        """One endpoint's route: its steps, then its handler, wired to the open backends."""
        max_body = (
            int(endpoint.max_body)
            if endpoint.max_body is not None
            else self.settings.max_body_bytes
        )
        steps: list[Step] = [body_limit(max_body)]
        handler: Handler
        if endpoint.proxy is not None:
            proxy = endpoint.proxy
            upstream = self.live[proxy.backend].passthrough
            assert upstream is not None, "checked: a proxy's backend can pass requests through"
            timeout = proxy.timeout or self.spec.backends[proxy.backend].timeout
            handler = proxy_handler(
                endpoint.path,
                proxy,
                upstream,
                timeout,
                max_body,
                self.forwarding,
                error_details=endpoint.error_details,
            )
            # a passthrough forwards every method unless the config names one
            given = "method" in endpoint.model_fields_set
            methods = [endpoint.method] if given else HTTP_METHODS
            return endpoint_route(endpoint.path, methods, steps, handler, self.forwarding)
        assert plan is not None, "every aggregation endpoint is planned"
        if plan.streams:
            stream = self.live[plan.calls[0].backend].stream
            assert stream is not None, "checked: a streaming call's backend can stream"
            handler = stream_handler(plan, stream)
        else:
            wrap = self.resilience.wrap
            calls = {call.name: wrap(call.backend, call.policies) for call in plan.calls}
            handler = aggregation_handler(plan, calls, self.metrics)
        return endpoint_route(endpoint.path, [endpoint.method], steps, handler, self.forwarding)
