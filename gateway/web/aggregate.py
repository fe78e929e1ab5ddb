"""The aggregation endpoint: plan -> execute -> merge -> respond.

Status rules: if every call failed, or a `required` call failed, the answer is 502 (504 when
the cause was a timeout) as problem+json naming the failed calls. Otherwise 200 with what
succeeded and `X-Gateway-Complete: true|false`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.engine.context import RequestContext
from gateway.engine.execute import Node, Outcome, execute
from gateway.engine.merge import merge, pick_field, transform
from gateway.engine.plan import CallPlan, EndpointPlan, check_request, render_request
from gateway.errors import (
    BadArgument,
    BadRequest,
    CallError,
    CallTimeout,
    NoRow,
    Refused,
    Skipped,
)
from gateway.observability.metrics import GatewayMetrics
from gateway.types import JSON, Call
from gateway.web.problems import problem
from gateway.web.steps import Handler


def aggregation_handler(
    plan: EndpointPlan, calls: Mapping[str, Call], metrics: GatewayMetrics
) -> Handler:
    """The handler of one aggregation endpoint, built once at start-up; `calls` holds each
    call's policy-wrapped Call, by call name."""
    by_name = {call.name: call for call in plan.calls}

    def node(
        call: CallPlan,
        context: RequestContext,
        forwarded: tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]],
        deadline: float,
    ) -> Node:
        backend_call = calls[call.name]
        forwarded_query, forwarded_headers = forwarded

        async def run(results: Mapping[str, Any]) -> JSON:
            # the results of the calls finished so far are the `calls` source
            sources = {**context.sources, "calls": results}
            backend_request = render_request(
                call, sources, forwarded_query, forwarded_headers, deadline
            )
            response = await backend_call(backend_request)
            return pick_field(response.body, call.shape.pick)

        # the call's own timeout bounds each try inside the policies (gateway/policies), so
        # that retries get one each and breakers see timeouts; here only the deadline
        return Node(call.name, call.needs, plan.timeout, run)

    async def handle(request: Request, context: RequestContext) -> Response:
        try:
            check_request(plan, context)  # typed parameters, path segments
        except BadRequest as exc:
            return problem(exc.status, str(exc))
        forwarded_query = tuple(
            (name, value)
            for name in plan.forward_query
            for key, value in context.query_items
            if key == name
        )
        headers = context.headers
        forwarded_headers = (
            *((h, headers[h]) for h in plan.forward_headers if h in headers),
            ("x-request-id", context.request_id),
        )
        deadline = asyncio.get_running_loop().time() + plan.timeout
        forwarded = (forwarded_query, forwarded_headers)
        outcomes = await execute(
            [node(call, context, forwarded, deadline) for call in plan.calls], deadline
        )
        _observe(metrics, plan.path, outcomes)
        return respond(plan, by_name, outcomes)

    return handle


def respond(
    plan: EndpointPlan, calls: Mapping[str, CallPlan], outcomes: Mapping[str, Outcome]
) -> Response:
    """The response for finished outcomes (pure: no I/O)."""
    failed = {name: o for name, o in outcomes.items() if not o.ok}
    decisive = {n: o for n, o in failed.items() if calls[n].required}
    if len(failed) == len(outcomes):
        decisive = failed
    if decisive:
        status, headers = _failure_status([o.error for o in decisive.values()], outcomes)
        names = ", ".join(decisive)
        return problem(
            status,
            f"call(s) failed: {names}",
            headers=headers,
            failed_calls={n: _describe(o.error, plan.error_details) for n, o in failed.items()},
        )
    body = merge(
        [
            (calls[name].shape, transform(o.value, calls[name].shape))
            for name, o in outcomes.items()
            if o.ok
        ]
    )
    if plan.error_details and failed:
        body["_errors"] = {n: _describe(o.error, True) for n, o in failed.items()}
    return Response(
        orjson.dumps(body),
        media_type="application/json",
        headers={"X-Gateway-Complete": "false" if failed else "true"},
    )


def _failure_status(
    errors: list[CallError | None], outcomes: Mapping[str, Outcome]
) -> tuple[int, dict[str, str]]:
    """The status of a failed endpoint: the most telling of its decisive errors."""
    if any(_timed_out(e, outcomes) for e in errors):
        return 504, {}
    refused = [e for e in errors if isinstance(e, Refused)]
    if refused:
        return 503, {"Retry-After": str(max(e.retry_after for e in refused))}
    if any(isinstance(e, BadArgument) for e in errors):
        return 400, {}
    if any(isinstance(e, NoRow) for e in errors):
        return 404, {}
    return 502, {}


def _timed_out(error: CallError | None, outcomes: Mapping[str, Outcome]) -> bool:
    if isinstance(error, CallTimeout):
        return True
    if isinstance(error, Skipped) and error.cause in outcomes:
        return _timed_out(outcomes[error.cause].error, outcomes)
    return False


def _describe(error: CallError | None, details: bool) -> dict[str, Any]:
    """A failed call as answers show it: the details (addresses, URLs, a library's wording)
    only for `error_details: true` endpoints."""
    described = {"status": error.status if error else None, "error": str(error)}
    if details and error is not None and error.details is not None:
        described["details"] = error.details
    return described


def _observe(metrics: GatewayMetrics, endpoint: str, outcomes: Mapping[str, Outcome]) -> None:
    for name, outcome in outcomes.items():
        kind = "ok" if outcome.ok else type(outcome.error).__name__
        metrics.call_latency.labels(endpoint, name, kind).observe(outcome.elapsed)
