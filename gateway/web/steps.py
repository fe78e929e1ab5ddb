"""Per-route steps: ordered functions that run before an endpoint's handler.

A step sees the request and its context and either answers itself (a 4xx problem+json: a
body too large, later a missing credential or a rate limit) or returns the context, possibly
with a source added (`context.with_source("auth", claims)`), for the next step. Handlers do
not know which steps ran: an edge feature is one new step module and one line where routes
are built (gateway/web/app.py). The request context is built here, once per request, after
routing (path parameters are known only then).

A step may also add headers to whatever answer the request gets, its own or a later step's
or the handler's (`add_response_headers`: CORS, rate-limit headers): they replace the
answer's headers of the same name, except `Vary`, whose values are joined.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.engine.context import RequestContext
from gateway.web.forwarding import Forwarding
from gateway.web.request_id import current_request_id

Step = Callable[[Request, RequestContext], Awaitable[RequestContext | Response]]
Handler = Callable[[Request, RequestContext], Awaitable[Response]]


_ADDED = "fanout.response_headers"  # in the ASGI scope: the one value a step and the route share


def add_response_headers(request: Request, headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Headers (lower-case names) for the answer of this request, whoever makes it."""
    request.scope.setdefault(_ADDED, []).extend(headers)


def _with_added(request: Request, response: Response) -> Response:
    added: list[tuple[bytes, bytes]] | None = request.scope.get(_ADDED)
    if not added:
        return response
    names = {name for name, _ in added}
    vary: list[bytes] = []
    kept: list[tuple[bytes, bytes]] = []
    for header in response.raw_headers:  # one pass: this runs for every answer
        name = header[0].lower()
        if name == b"vary":
            vary.append(header[1])
        if name not in names:
            kept.append(header)
    if vary:
        added = [(k, b", ".join([*vary, v]) if k == b"vary" else v) for k, v in added]
    kept += added
    response.raw_headers = kept
    return response


def endpoint_route(
    path: str,
    methods: Sequence[str],
    steps: Sequence[Step],
    handler: Handler,
    forwarding: Forwarding,
) -> Route:
    """A Starlette route running `steps` in order, then `handler`."""
    return Route(path, _Endpoint(tuple(steps), handler, forwarding), methods=list(methods))


class _Endpoint:
    """A route's ASGI app: the context, the steps, the handler, the answer.

    An ASGI app rather than a `request -> response` function, which Starlette would wrap in
    `request_response`: that builds two closures, a `send` wrapper and three coroutine frames
    per request to catch the exceptions it has handlers for, which the app's own
    ExceptionMiddleware catches all the same (steps and handlers answer problems
    themselves; only Starlette's HTTPException has a handler)."""

    __slots__ = ("client_ip", "handler", "steps")

    def __init__(self, steps: tuple[Step, ...], handler: Handler, forwarding: Forwarding) -> None:
        self.steps = steps
        self.handler = handler
        self.client_ip = forwarding.client_ip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        context = RequestContext.from_scope(scope, current_request_id.get(), self.client_ip)
        for step in self.steps:
            outcome = await step(request, context)
            if isinstance(outcome, Response):
                await _with_added(request, outcome)(scope, receive, send)
                return
            context = outcome
        response = await self.handler(request, context)
        await _with_added(request, response)(scope, receive, send)
