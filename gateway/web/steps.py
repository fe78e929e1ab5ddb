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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.engine.context import ClientIp, RequestContext
from gateway.web.forwarding import Forwarding
from gateway.web.request_id import current_request_id
from gateway.web.routing import EndpointRoute

Step = Callable[[Request, RequestContext], Awaitable[RequestContext | Response]]
Handler = Callable[[Request, RequestContext], Awaitable[Response]]


_ADDED = "fanout.response_headers"  # in the ASGI scope: the one value a step and the route share


def add_response_headers(request: Request, headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Headers (lower-case names) for the answer of this request, whoever makes it."""
    request.scope.setdefault(_ADDED, []).extend(headers)


def _with_added(request: Request, response: Response) -> Response:
    added: list[tuple[bytes, bytes]] | None = request.scope.get(_ADDED)
    if added:
        response.raw_headers = _merged(response.raw_headers, added)
    return response


def _merged(
    headers: Iterable[tuple[bytes, bytes]], added: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """An answer's headers with the steps' `added` ones (see the module docstring)."""
    names = {name for name, _ in added}
    vary: list[bytes] = []
    kept: list[tuple[bytes, bytes]] = []
    for header in headers:  # one pass: this runs for every answer
        name = header[0].lower()
        if name == b"vary":
            vary.append(header[1])
        if name not in names:
            kept.append(header)
    if vary:
        added = [(k, b", ".join([*vary, v]) if k == b"vary" else v) for k, v in added]
    kept += added
    return kept


def endpoint_route(
    path: str,
    methods: Sequence[str],
    steps: Sequence[Step],
    handler: Handler,
    forwarding: Forwarding,
) -> EndpointRoute:
    """A Starlette route running `steps` in order, then `handler`."""
    return EndpointRoute(path, _Endpoint(tuple(steps), handler, forwarding), methods=list(methods))


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
        context = await _run_steps(self.steps, request, self.client_ip, send)
        if context is None:
            return
        response = await self.handler(request, context)
        await _with_added(request, response)(scope, receive, send)


async def _run_steps(
    steps: tuple[Step, ...], request: Request, client_ip: ClientIp, send: Send
) -> RequestContext | None:
    """The request's context after `steps`, or None when one of them answered (sent)."""
    scope = request.scope
    context = RequestContext.from_scope(scope, current_request_id.get(), client_ip)
    for step in steps:
        outcome = await step(request, context)
        if isinstance(outcome, Response):
            await _with_added(request, outcome)(scope, request.receive, send)
            return None
        context = outcome
    return context


def app_route(
    path: str, methods: Sequence[str], steps: Sequence[Step], app: ASGIApp, forwarding: Forwarding
) -> EndpointRoute:
    """A route running `steps` in order, then the ASGI app `app`, which answers itself (a
    passthrough, web/proxy.py); with no steps, `app` is the route's app as it is."""
    endpoint = _StepsFirst(tuple(steps), app, forwarding) if steps else app
    return EndpointRoute(path, endpoint, methods=list(methods))


class _StepsFirst:
    """The steps of a route whose handler is an ASGI app: the request and its context are
    built for the steps only, and the headers they added go onto whatever the app answers
    (its first message). The context the steps made is not handed on: such an app reads
    the scope itself."""

    __slots__ = ("app", "client_ip", "steps")

    def __init__(self, steps: tuple[Step, ...], app: ASGIApp, forwarding: Forwarding) -> None:
        self.steps = steps
        self.app = app
        self.client_ip = forwarding.client_ip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        if await _run_steps(self.steps, request, self.client_ip, send) is None:
            return
        added: list[tuple[bytes, bytes]] | None = scope.get(_ADDED)
        if not added:
            await self.app(scope, receive, send)
            return
        extra = added

        async def adding(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _merged(message.get("headers", ()), extra)
            await send(message)

        await self.app(scope, receive, adding)
