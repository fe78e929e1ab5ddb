"""The aggregation endpoint: plan -> execute -> merge -> respond.

Status rules: if every call failed, or a `required` call failed, the answer is 502 (504 when
the cause was a timeout) as problem+json naming the failed calls. Otherwise 200 with what
succeeded and `X-Gateway-Complete: true|false`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.backends import Backends
from gateway.body_limit import declared_length_exceeds
from gateway.errors import (
    BadArgument,
    BadRequest,
    CallError,
    CallTimeout,
    NoRow,
    Refused,
    Skipped,
)
from gateway.execute import Outcome, Step, execute
from gateway.merge import merge, take_target, transform
from gateway.metrics import GatewayMetrics
from gateway.plan import CallPlan, EndpointPlan, render_request, request_values
from gateway.policies import Resilience
from gateway.problems import problem
from gateway.request_id import current_request_id
from gateway.sql_params import check_request
from gateway.types import JSON, Call

Handler = Callable[[Request], Awaitable[Response]]


def aggregation_handler(
    plan: EndpointPlan,
    backends: Backends,
    metrics: GatewayMetrics,
    max_body: int,
    resilience: Resilience,
) -> Handler:
    """The request handler of one aggregation endpoint, built once at start-up."""
    by_name = {call.name: call for call in plan.calls}
    # each call's policy-wrapped Call, built at its first use: by then the lifespan has opened
    # the backends and their shared policy state
    wrapped: dict[str, Call] = {}

    async def handle(request: Request) -> Response:
        if declared_length_exceeds(request, max_body):
            return problem(413, f"request body is larger than {max_body} bytes")
        try:
            values = request_values(request)
            check_request((call.sql for call in plan.calls), values)  # typed SQL parameters
        except BadRequest as exc:
            return problem(400, str(exc))
        forwarded_query = tuple(
            (name, value)
            for name in plan.forward_query
            for value in request.query_params.getlist(name)
        )
        forwarded_headers = (
            *((h, request.headers[h]) for h in plan.forward_headers if h in request.headers),
            ("x-request-id", current_request_id.get()),
        )

        deadline = asyncio.get_running_loop().time() + plan.timeout

        def step(call: CallPlan) -> Step:
            backend_call = wrapped.get(call.name)
            if backend_call is None:
                backend_call = wrapped[call.name] = resilience.wrap(call.backend, call.policies)

            async def run(results: Mapping[str, Any]) -> JSON:
                backend_request = render_request(
                    call, replace(values, results=results), forwarded_query, forwarded_headers
                )
                response = await backend_call(replace(backend_request, deadline=deadline))
                return take_target(response.body, call.shape.target)

            # the call's own timeout bounds each try inside the policies (gateway/policies), so
            # that retries get one each and breakers see timeouts; here only the deadline
            return Step(call.name, call.needs, plan.timeout, run)

        outcomes = await execute([step(call) for call in plan.calls], deadline)
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
            failed_calls={n: _describe(o.error) for n, o in failed.items()},
        )
    body = merge(
        [
            (calls[name].shape, transform(o.value, calls[name].shape))
            for name, o in outcomes.items()
            if o.ok
        ]
    )
    if plan.error_details and failed:
        body["_errors"] = {n: _describe(o.error) for n, o in failed.items()}
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


def _describe(error: CallError | None) -> dict[str, Any]:
    return {"status": error.status if error else None, "error": str(error)}


def _observe(metrics: GatewayMetrics, endpoint: str, outcomes: Mapping[str, Outcome]) -> None:
    for name, outcome in outcomes.items():
        kind = "ok" if outcome.ok else type(outcome.error).__name__
        metrics.call_latency.labels(endpoint, name, kind).observe(outcome.elapsed)
