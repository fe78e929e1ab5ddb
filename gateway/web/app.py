"""`create_app(spec, settings)`: the Starlette app, whose lifespan opens the backends and
builds the routes, and replaces them on a reload (gateway/web/runtime.py).

What lives as long as the process is built here, once: metrics, health, the caches, the
background calls, tracing, the access log, the status page. Each generation of the config
(the first at start-up, the next on SIGHUP or a file change) gets its backends, policies,
guards and routes from the runtime; each route is built fully wired, with its steps and its
handler: nothing is filled in later, on a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.backends.live import LiveBackend
from gateway.backends.registry import traits_of
from gateway.config.document import GatewaySpec
from gateway.config.models import EndpointSpec
from gateway.config.settings import Settings
from gateway.config.values import HTTP_METHODS
from gateway.engine.plan import CallPlan, EndpointPlan, plan_endpoint
from gateway.observability.access_log import open_access_log
from gateway.observability.loop_lag import lag_histogram, monitoring_lag
from gateway.observability.memory import trimming_memory
from gateway.observability.metrics import GatewayMetrics
from gateway.observability.spans import SpanRecorder
from gateway.observability.status import BackendView, StatusData, routes_of
from gateway.observability.tracing import open_tracing
from gateway.policies.cache import CacheCollector, Caches
from gateway.policies.chain import Resilience
from gateway.policies.metrics import PolicyMetrics
from gateway.policies.tracing import CallTrace
from gateway.server.admin import serving_admin
from gateway.web.aggregate import aggregation_handler
from gateway.web.background import BackgroundCalls, shutdown_deadline
from gateway.web.body import body_limit
from gateway.web.docs_page import docs_routes
from gateway.web.edge import EdgeMiddleware
from gateway.web.forwarding import Forwarding, parse_trusted
from gateway.web.guard_metrics import GuardMetrics
from gateway.web.guards import Guards
from gateway.web.health import Health
from gateway.web.ndjson import stream_handler
from gateway.web.observe import Observer
from gateway.web.problems import http_exception_handler
from gateway.web.proxy import passthrough_app
from gateway.web.reload import watching
from gateway.web.request_body import body_step
from gateway.web.routing import GatewayRouter
from gateway.web.runtime import Generation, Runtime
from gateway.web.status_page import StatusPage
from gateway.web.steps import Handler, Step, app_route, endpoint_route

log = logging.getLogger("gateway.app")


def create_app(spec: GatewaySpec, settings: Settings | None = None) -> Starlette:
    """The gateway for a validated spec. Backends open in the lifespan, not here."""
    settings = settings or Settings()
    metrics = GatewayMetrics()
    if settings.prometheus_multiproc_dir is not None:  # `--workers N`: the whole group
        metrics.expose_group(settings.prometheus_multiproc_dir)
    health = Health()
    loop_lag = lag_histogram(metrics.registry)
    background = BackgroundCalls(settings.background_calls, metrics.registry)
    tracing = open_tracing(settings, metrics.registry)
    access_log = (
        open_access_log(settings.access_log_queue, metrics.registry)
        if settings.access_log
        else None
    )
    status = StatusPage()
    # with an admin port these answer there only (gateway/server/admin.py), else here
    admin_routes: list[BaseRoute] = [
        Route("/livez", health.livez, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
        Route("/status", status.page, methods=["GET"]),
        Route("/status/live", status.live, methods=["GET"]),
    ]
    operations: list[BaseRoute] = [
        *(admin_routes if settings.admin_port is None else admin_routes[:1]),
        *docs_routes(spec),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if tracing is not None:  # last out: the spans of the shutdown are exported too
                stack.push_async_callback(asyncio.to_thread, tracing.shutdown)
            if access_log is not None:
                stack.callback(access_log.close)
            if settings.admin_port is not None:
                admin = Starlette(routes=admin_routes)
                await stack.enter_async_context(
                    serving_admin(admin, settings.host, settings.admin_port)
                )
            caches = Caches(settings.cache_max_bytes)
            # the Redis of `store: redis` caches is the runtime's (it follows `cluster.redis`
            # across reloads): the one in use is closed after the refreshes are cancelled
            stack.push_async_callback(caches.close_redis)
            stack.push_async_callback(caches.aclose)
            metrics.registry.register(CacheCollector(caches))
            forwarding = Forwarding(parse_trusted(settings.trusted_proxies))
            tracer = tracing.recorder if tracing else None

            def build_routes(generation: Generation) -> list[Route]:
                wiring = _Wiring(
                    generation.spec,
                    generation.live,
                    generation.resilience,
                    metrics,
                    settings,
                    forwarding,
                    generation.guards,
                    background,
                    tracer,
                )
                plans = {
                    index: plan_endpoint(endpoint, generation.spec.backends, traits_of)
                    for index, endpoint in enumerate(generation.spec.endpoints)
                    if endpoint.proxy is None
                }
                return [
                    wiring.route(e, plans.get(i)) for i, e in enumerate(generation.spec.endpoints)
                ]

            def install(generation: Generation) -> None:
                app.router.routes = [*operations, *generation.routes]
                status.data = status_data(
                    generation.spec, generation.live, generation.resilience, metrics, health
                )

            runtime = Runtime(
                settings=settings,
                app_stack=stack,
                registry=metrics.registry,
                health=health,
                caches=caches,
                policy_metrics=PolicyMetrics(metrics.registry),
                guard_metrics=GuardMetrics(metrics.registry),
                build_routes=build_routes,
                install=install,
                background_settled=background.settled,
            )
            await runtime.start(spec)
            app.state.reload = runtime.request_reload
            await stack.enter_async_context(metrics.window.running())
            if settings.watch:
                await stack.enter_async_context(watching(runtime))
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
            await runtime.wait_retired()
            # background calls still use the backends: they finish (or time out) first
            loop = asyncio.get_running_loop()
            await background.drain(
                shutdown_deadline(
                    loop.time(),
                    time.monotonic(),
                    health.draining_since,
                    settings.drain_seconds,
                    settings.graceful_timeout_seconds,
                )
            )

    router = GatewayRouter(operations, lifespan=lifespan)
    app = GatewayApp(
        middleware=[
            Middleware(
                EdgeMiddleware,
                metrics=metrics,
                max_in_flight=settings.max_in_flight,
                retry_after=settings.retry_after_seconds,
                # only when on: with tracing and the access log off a request does no more
                observer=(
                    Observer(recorder=tracing.recorder if tracing else None, access_log=access_log)
                    if tracing is not None or access_log is not None
                    else None
                ),
                lanes=router.lane,
            ),
        ],
        exception_handlers={HTTPException: http_exception_handler},
    )
    app.router = router  # before the first request builds the middleware stack around it
    app.state.health = health  # read by the server's drain (gateway/server/serve.py)
    app.state.reload = _not_started  # the lifespan replaces it: SIGHUP -> reload
    return app


class GatewayApp(Starlette):
    """The Starlette app, whose HTTP requests the edge (web/edge.py) takes first.

    Starlette puts its ServerErrorMiddleware outside every middleware, to answer 500 for an
    exception that escapes them; the edge answers every exception of a request itself, so
    for HTTP requests it is called directly (one coroutine frame and one `send` wrapper per
    message fewer). What the edge's own code would raise, uvicorn logs and answers 500."""

    edge: EdgeMiddleware | None = None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        layer: object = stack
        while layer is not None and not isinstance(layer, EdgeMiddleware):
            layer = getattr(layer, "app", None)
        self.edge = layer
        return stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        edge = self.edge
        if edge is not None and scope["type"] == "http":
            scope["app"] = self
            await edge(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _not_started() -> None:
    log.warning("reload ignored: the gateway has not started serving yet")


@dataclass(frozen=True, slots=True)
class _Wiring:
    """What the routes are built from, once the backends are open."""

    spec: GatewaySpec
    live: Mapping[str, LiveBackend]
    resilience: Resilience
    metrics: GatewayMetrics
    settings: Settings
    forwarding: Forwarding
    guards: Guards
    background: BackgroundCalls
    tracer: SpanRecorder | None = None

    def route(self, endpoint: EndpointSpec, plan: EndpointPlan | None) -> Route:
        """One endpoint's route: its steps, then its handler, wired to the open backends."""
        max_body = (
            int(endpoint.max_body)
            if endpoint.max_body is not None
            else self.settings.max_body_bytes
        )
        # a passthrough forwards every method unless the config names one
        given = endpoint.proxy is None or "method" in endpoint.model_fields_set
        own = [endpoint.method] if given else list(HTTP_METHODS)
        guards = self.guards
        methods = guards.methods(endpoint, own)  # with CORS, OPTIONS too (gateway/web/cors.py)
        steps: list[Step] = [
            *guards.cors(endpoint, own),  # preflights answered first: they carry no credential
            *guards.auth(endpoint),  # 401/403 before anything is spent on the request
            *guards.rate_limits(endpoint),  # keys may read {auth.sub}
        ]
        if endpoint.proxy is not None:
            proxy = endpoint.proxy
            upstream = self.live[proxy.backend].passthrough
            assert upstream is not None, "checked: a proxy's backend can pass requests through"
            timeout = proxy.timeout or self.spec.backends[proxy.backend].timeout
            app = passthrough_app(
                endpoint.path,
                proxy,
                upstream,
                timeout,
                max_body,  # checked by the app itself, first, as `body_limit` would
                self.forwarding,
                error_details=endpoint.error_details,
            )
            return app_route(endpoint.path, methods, steps, app, self.forwarding)
        steps.append(body_limit(max_body))
        handler: Handler
        assert plan is not None, "every aggregation endpoint is planned"
        steps.append(body_step(plan, endpoint.request, max_body))
        if plan.streams:
            stream = self.live[plan.calls[0].backend].stream
            assert stream is not None, "checked: a streaming call's backend can stream"
            handler = stream_handler(plan, stream)
        else:
            wrap = self.resilience.wrap
            calls = {
                call.name: wrap(call.backend, call.policies, self._trace(endpoint, call))
                for call in plan.calls
            }
            handler = aggregation_handler(
                plan,
                calls,
                self.metrics,
                forwarding=self.forwarding,
                background=self.background,
            )
        return endpoint_route(endpoint.path, methods, steps, handler, self.forwarding)

    def _trace(self, endpoint: EndpointSpec, call: CallPlan) -> CallTrace | None:
        """What each try's span of `call` carries, or None when tracing is off."""
        if self.tracer is None:
            return None
        attributes = {  # the endpoint is the parent span's route
            "gateway.call": call.name,
            "gateway.backend": call.backend,
            "gateway.backend.kind": self.live[call.backend].kind,
            **call.attributes,
        }
        return CallTrace(self.tracer, call.name, attributes)


def status_data(
    spec: GatewaySpec,
    live: Mapping[str, LiveBackend],
    resilience: Resilience,
    metrics: GatewayMetrics,
    health: Health,
) -> StatusData:
    """The status page's view of the open app."""

    def breakers(name: str) -> Callable[[], dict[str, str]]:
        found = resilience.breakers(name)
        return lambda: {b.host: b.state for b in found}

    return StatusData(
        routes=routes_of(spec.endpoints),
        backends=tuple(
            BackendView(
                name=name,
                kind=backend.kind,
                hosts=tuple(host for host, _ in backend.hosts),
                breakers=breakers(name),
                usage=backend.usage,
            )
            for name, backend in live.items()
        ),
        window=metrics.window,
        state=lambda: health.state,
    )
