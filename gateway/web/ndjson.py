"""Streaming endpoints: one `result: stream` SQL call answered as application/x-ndjson.

The rows are pulled from a server-side cursor batch by batch only as fast as the client
reads: `send` waits while the socket's write buffer is full (uvicorn's flow control), and the
next batch is not fetched before the last one was sent, so a slow client never makes the
gateway buffer the table. The first batch is read before answering, so an error that happens
before any row (bad parameter, pool exhausted, SQL error, timeout) is still a proper
problem+json. A client that disconnects cancels the stream: the read-only transaction rolls
back, which closes the cursor, and the connection goes back to the pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.backends.live import Stream
from gateway.engine.context import RequestContext
from gateway.engine.plan import EndpointPlan, check_request, render_request
from gateway.errors import BadRequest, CallError, MissingValue, Refused
from gateway.web.problems import problem
from gateway.web.steps import Handler

NDJSON = "application/x-ndjson"


def stream_handler(plan: EndpointPlan, stream: Stream) -> Handler:
    """The handler of a streaming endpoint (`plan.streams`), built once at start-up."""
    (call,) = plan.calls

    async def handle(request: Request, context: RequestContext) -> Response:
        try:
            check_request(plan, context)
            backend_request = render_request(call, context.sources, (), ())
        except BadRequest as exc:
            return problem(exc.status, str(exc))
        except MissingValue as exc:
            return problem(502, f"call(s) failed: {call.name}: {exc}")
        batches = stream(backend_request)
        try:
            async with asyncio.timeout(call.timeout):
                first = await anext(batches, b"")
        except TimeoutError:
            await batches.aclose()
            return problem(504, f"call(s) failed: {call.name} (no rows within {call.timeout:g}s)")
        except Refused as exc:
            return problem(503, str(exc), headers={"Retry-After": str(exc.retry_after)})
        except CallError as exc:
            status = exc.status if exc.status == 400 else 502
            return problem(status, f"call(s) failed: {call.name}: {exc}")
        return NdjsonResponse(first, batches)

    return handle


class NdjsonResponse(Response):
    """Sends `first`, then every chunk of `rest`, until done or the client disconnects."""

    media_type = NDJSON

    def __init__(self, first: bytes, rest: AsyncGenerator[bytes, None]) -> None:
        super().__init__(content=None, status_code=200, media_type=NDJSON)
        self.headers["x-gateway-complete"] = "true"
        del self.headers["content-length"]
        self.first = first
        self.rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with aclosing(self.rest):
            pump = asyncio.create_task(self._pump(send), name="ndjson:pump")
            watch = asyncio.create_task(_disconnected(receive), name="ndjson:watch")
            try:
                await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                pump.cancel()
                watch.cancel()
                # the pump must have stopped before `aclosing` closes the generator it iterates
                await asyncio.wait({pump, watch})
            error = None if pump.cancelled() else pump.exception()
            if error is not None:
                raise error  # mid-stream: uvicorn aborts the connection, the client sees it cut

    async def _pump(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        if self.first:
            await send({"type": "http.response.body", "body": self.first, "more_body": True})
        async for chunk in self.rest:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
