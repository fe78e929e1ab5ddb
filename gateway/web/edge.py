"""The one ASGI layer every request goes through first: its request id, admission (load
shedding), request metrics, the answer to a request that raised, and (when tracing or the
access log is on) its observation: server span and access line (web/observe.py).

One layer rather than four: each pure-ASGI wrapper costs a coroutine frame and a `send`
wrapper per message on every request. The request id is set before anything else runs, so
every answer carries `X-Request-ID` (4xx and 5xx included) and every log line of the
request can name it. A request that raises is logged once, with its id and traceback, and
answered 500 problem+json (or, if its answer had already started, cut off: the client sees
an incomplete response).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.observability.metrics import GatewayMetrics
from gateway.web.observe import Observer
from gateway.web.problems import problem
from gateway.web.request_id import choose_request_id, current_request_id
from gateway.web.shedding import UNSHED_PATHS, Admission

log = logging.getLogger("gateway.web")

_ID = b"x-request-id"


class EdgeMiddleware:
    """Pure ASGI middleware; one instance per app."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: GatewayMetrics,
        max_in_flight: int,
        retry_after: int,
        observer: Observer | None = None,
        lanes: Callable[[Scope], ASGIApp | None] | None = None,
    ) -> None:
        self.app = app
        # the endpoint route's app for a request, called here directly (web/routing.py)
        self.lanes = lanes
        self.metrics = metrics
        self.observer = observer
        self.admission = admission = Admission(max_in_flight)
        self.retry_after = str(retry_after)
        # read when /metrics is scraped: a gauge updated twice per request costs more
        metrics.in_flight.set_function(lambda: admission.in_flight)
        metrics.in_flight_peak.set_function(lambda: admission.peak)

    def __repr__(self) -> str:
        return f"<EdgeMiddleware {self.admission!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = None
        for name, value in scope["headers"]:
            if name == _ID:  # ASGI servers give lower-case names
                received = value.decode("latin-1")
                break
        request_id = choose_request_id(received)
        token = current_request_id.set(request_id)
        id_header = (_ID, request_id.encode())
        answered = 0  # the status sent; 0 until the answer starts
        # probes and scrapes are never shed, and not counted as traffic (nor observed)
        counted = scope["path"] not in UNSHED_PATHS
        observer = self.observer if counted else None
        sent = 0  # body bytes, counted only for the access line

        async def send_with_id(message: Message) -> None:
            nonlocal answered, sent
            if message["type"] == "http.response.start":
                answered = message["status"]
                # ours replaces any the app (or an upstream, through a passthrough) set
                headers = [h for h in message.get("headers", ()) if h[0].lower() != _ID]
                headers.append(id_header)
                message["headers"] = headers
            elif observer is not None:
                sent += len(message.get("body", b""))
            await send(message)

        if counted and not self.admission.admit():
            self.metrics.shed.inc()
            refusal = problem(
                503,
                "the gateway is at capacity; retry later",
                headers={"Retry-After": self.retry_after},
            )
            try:
                await refusal(scope, receive, send_with_id)
            finally:
                current_request_id.reset(token)
            return
        started = time.perf_counter()
        observation = observer.begin(scope, request_id) if observer is not None else None
        try:
            lane = self.lanes(scope) if self.lanes is not None else None
            await (lane or self.app)(scope, receive, send_with_id)
        except Exception as exc:  # a bug: this request fails, the process goes on
            if observation is not None:
                observation.raised(exc)
            log.exception(
                "%s %s failed: internal error (request id %s)",
                scope["method"],
                scope["path"],
                request_id,
            )
            if answered == 0:
                crash = problem(500, f"internal error; the gateway log has request id {request_id}")
                await crash(scope, receive, send_with_id)
        finally:
            if counted:
                elapsed = time.perf_counter() - started
                self.admission.leave()
                endpoint = getattr(scope.get("route"), "path", "unmatched")
                self.metrics.answered(endpoint, scope["method"], answered or 500, elapsed)
                if observer is not None and observation is not None:
                    observer.finish(observation, scope, request_id, answered or 500, sent, elapsed)
            current_request_id.reset(token)
