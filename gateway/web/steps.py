"""Per-route steps: ordered functions that run before an endpoint's handler.

A step sees the request and its context and either answers itself (a 4xx problem+json: a
body too large, later a missing credential or a rate limit) or returns the context, possibly
with a source added (`context.with_source("auth", claims)`), for the next step. Handlers do
not know which steps ran: an edge feature is one new step module and one line where routes
are built (gateway/web/app.py). The request context is built here, once per request, after
routing (path parameters are known only then).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.engine.context import RequestContext
from gateway.web.forwarding import Forwarding
from gateway.web.request_id import current_request_id

Step = Callable[[Request, RequestContext], Awaitable[RequestContext | Response]]
Handler = Callable[[Request, RequestContext], Awaitable[Response]]


def endpoint_route(
    path: str,
    methods: Sequence[str],
    steps: Sequence[Step],
    handler: Handler,
    forwarding: Forwarding,
) -> Route:
    """A Starlette route running `steps` in order, then `handler`."""
    ordered = tuple(steps)

    async def endpoint(request: Request) -> Response:
        scope = request.scope
        context = RequestContext.from_scope(scope, current_request_id.get(), forwarding.client_ip)
        for step in ordered:
            outcome = await step(request, context)
            if isinstance(outcome, Response):
                return outcome
            context = outcome
        return await handler(request, context)

    return Route(path, endpoint, methods=list(methods))
