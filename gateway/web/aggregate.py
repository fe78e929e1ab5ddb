"""The aggregation endpoint: plan -> execute -> merge -> respond.

Status rules: if every call failed, or a `required` call failed, the answer is 502 (504 when
the cause was a timeout) as problem+json naming the failed calls. Otherwise 200 with what
succeeded and `X-Gateway-Complete: true|false`. A `for_each` call with failed elements is a
partial answer (`false`), and fails the endpoint when it is `required`. A decisive failure
caused by a `pass_errors` call whose backend answered 4xx answers that status instead
(`_passed_error`).

Background calls (`background: true`) are not part of the answer: they are handed to the
app's `BackgroundCalls` once the response has been sent (gateway/web/background.py).
Every call to an HTTP backend is told who the client is (`X-Forwarded-*`, the passthrough's
rule: gateway/web/forwarding.py); a header the client's `Connection` names is never passed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from gateway.engine.assemble import assemble
from gateway.engine.context import RequestContext
from gateway.engine.execute import Node, Outcome, execute
from gateway.engine.foreach import run_for_each
from gateway.engine.merge import pick_field
from gateway.engine.plan import CallPlan, EndpointPlan, check_request, render_request
from gateway.engine.templates import Sources
from gateway.errors import (
    BadArgument,
    BadRequest,
    BadStatus,
    CallError,
    CallTimeout,
    NoRow,
    Refused,
    Skipped,
)
from gateway.observability.metrics import GatewayMetrics
from gateway.policies.cache import CachedCall
from gateway.timers import Timeouts
from gateway.types import JSON, BackendRequest, BackendResponse, Call
from gateway.web.background import BackgroundCalls
from gateway.web.forwarding import FORWARDING_HEADERS, Forwarding, connection_named
from gateway.web.observe import note_failed_calls
from gateway.web.problems import problem
from gateway.web.steps import Handler


def aggregation_handler(
    plan: EndpointPlan,
    calls: Mapping[str, Call],
    metrics: GatewayMetrics,
    *,
    forwarding: Forwarding | None = None,
    background: BackgroundCalls | None = None,
) -> Handler:
    """The handler of one aggregation endpoint, built once at start-up; `calls` holds each
    call's policy-wrapped Call, by call name. `forwarding` says what backends are told of the
    client (X-Forwarded-*; None: nothing), `background` runs the background calls."""
    by_name = {call.name: call for call in plan.calls}
    answering = tuple(call for call in plan.calls if not call.background)
    later = tuple(call for call in plan.calls if call.background)
    later_names = tuple(call.name for call in later)
    assert background is not None or not later, "background calls need a BackgroundCalls"
    # the gateway says who the client is itself (forwarding.py): a client's claims never pass
    forward_headers = tuple(h for h in plan.forward_headers if h not in FORWARDING_HEADERS)
    # a call that is tried once, under its policy timeout, ends within that timeout: execute
    # then arms no deadline timer of its own for it (one timer per call, not two)
    bounded = {call.name: single_try_bound(call) for call in plan.calls}
    per_element = any(call.for_each is not None for call in answering)  # element metrics

    peeks = {name: c.peek if isinstance(c, CachedCall) else None for name, c in calls.items()}
    # the deadline timers of the endpoint's calls: its requests' deadlines, all the same
    # length from their start, end in the order they start (gateway/timers.py)
    timeouts = Timeouts()

    def node(call: CallPlan, shared: _Shared) -> Node:
        runner = _CallRun(call, calls[call.name], peeks[call.name], shared)
        # the call's own timeout bounds each try inside the policies (gateway/policies), so
        # that retries get one each and breakers see timeouts; here only the deadline
        if runner.peek is None or call.for_each is not None:
            return Node(call.name, call.needs, plan.timeout, runner.run, bounded[call.name])
        return Node(
            call.name, call.needs, plan.timeout, runner.run, bounded[call.name], runner.ready
        )

    def forwarded_headers(request: Request, context: RequestContext) -> tuple[tuple[str, str], ...]:
        """The listed client headers (not those its Connection header names), what the
        backends are told of the client, and the request id."""
        headers = context.headers
        named = connection_named(request.scope["headers"]) if "connection" in headers else ()
        chosen = [(h, headers[h]) for h in forward_headers if h in headers and h not in named]
        if forwarding is not None:
            scope = request.scope
            peer = scope["client"][0] if scope.get("client") else None
            told = forwarding.upstream_headers(peer, scope["scheme"], headers)
            chosen += [(name.lower(), value) for name, value in told]
        chosen.append(("x-request-id", context.request_id))
        return tuple(chosen)

    async def handle(request: Request, context: RequestContext) -> Response:
        try:
            check_request(plan, context)  # typed parameters, path segments
        except BadRequest as exc:
            return problem(exc.status, str(exc))
        forwarded_query = (
            tuple(
                (name, value)
                for name in plan.forward_query
                for key, value in context.query_items
                if key == name
            )
            if plan.forward_query
            else ()
        )
        told = forwarded_headers(request, context)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + plan.timeout
        identity = context.identity
        shared = _Shared(context, forwarded_query, told, deadline, identity)
        outcomes = await execute(
            [node(call, shared) for call in answering], deadline, None, timeouts
        )
        failed = _observe(metrics, plan.path, outcomes)
        if per_element:
            _observe_elements(metrics, plan.path, outcomes)
        response = respond(plan, by_name, outcomes)
        if failed:  # the failure path only: nothing is recorded for a complete answer
            metrics.window.note_failure(context.request_id, plan.path, response.status_code, failed)
            note_failed_calls(failed)
        if plan.cache_control is not None:
            response = revalidated(
                response, plan.cache_control, context.headers.get("if-none-match")
            )
        if later and background is not None:

            async def run_later() -> Mapping[str, Outcome]:
                deadline = loop.time() + plan.timeout  # the endpoint's budget, from now
                shared = _Shared(context, forwarded_query, told, deadline, identity)
                nodes = [node(call, shared) for call in later]
                done = await execute(nodes, deadline, outcomes, timeouts)
                _observe(metrics, plan.path, done)
                return done

            # Starlette runs a response's background after its last byte was sent
            response.background = BackgroundTask(
                background.start, plan.path, later_names, run_later
            )
        return response

    return handle


class _Shared:
    """What every call of one request is rendered with."""

    __slots__ = ("context", "deadline", "forwarded_headers", "forwarded_query", "identity")

    def __init__(
        self,
        context: RequestContext,
        forwarded_query: tuple[tuple[str, str], ...],
        forwarded_headers: tuple[tuple[str, str], ...],
        deadline: float,
        identity: str,
    ) -> None:
        self.context = context
        self.forwarded_query = forwarded_query
        self.forwarded_headers = forwarded_headers
        self.deadline = deadline
        self.identity = identity

    def render(self, call: CallPlan, sources: Sources) -> BackendRequest:
        """The backend request of `call` from `sources`, with what the request forwards."""
        return render_request(
            call,
            sources,
            self.forwarded_query,
            self.forwarded_headers,
            self.deadline,
            identity=self.identity,
            client_body=self.context.raw_body,
        )


class _CallRun:
    """One call of one request: its `Node.run`, and `Node.ready` for a cached call.

    An object and its two bound methods rather than two closures: per call and request, a
    few objects for the cycle collector to walk instead of a dozen cells and functions."""

    __slots__ = ("backend_call", "call", "peek", "rendered", "shared")

    def __init__(
        self,
        call: CallPlan,
        backend_call: Call,
        peek: Callable[[BackendRequest], BackendResponse | None] | None,
        shared: _Shared,
    ) -> None:
        self.call = call
        self.backend_call = backend_call
        self.peek = peek
        self.shared = shared
        self.rendered: BackendRequest | None = None  # by `ready`, for `run` after a miss

    def ready(self, results: Mapping[str, Any]) -> tuple[JSON] | None:
        assert self.peek is not None
        call = self.call
        self.rendered = rendered = self.shared.render(
            call, {**self.shared.context.sources, "calls": results}
        )
        response = self.peek(rendered)
        return None if response is None else (pick_field(response.body, call.shape.pick),)

    async def run(self, results: Mapping[str, Any]) -> JSON:
        call, shared = self.call, self.shared
        if self.rendered is not None:  # `ready` rendered it from these results: a miss
            response = await self.backend_call(self.rendered)
            return pick_field(response.body, call.shape.pick)
        # the results of the calls finished so far are the `calls` source
        sources = {**shared.context.sources, "calls": results}
        if call.for_each is not None:
            return await run_for_each(
                call.for_each,
                sources,
                lambda item: shared.render(call, item),
                self.backend_call,
                call.shape.pick,
            )
        response = await self.backend_call(shared.render(call, sources))
        return pick_field(response.body, call.shape.pick)


def single_try_bound(call: CallPlan) -> float | None:
    """The longest a call can take when its chain (gateway/policies/chain.py) tries it once
    under its per-try timeout and nothing in it waits (no retry, hedge, coalescing, cache,
    nor a `for_each` of many requests); None otherwise."""
    policies = call.policies
    once = policies.retry is None and policies.hedge is None
    alone = not policies.coalesce and policies.cache is None and call.for_each is None
    return policies.timeout if once and alone else None


def respond(
    plan: EndpointPlan, calls: Mapping[str, CallPlan], outcomes: Mapping[str, Outcome]
) -> Response:
    """The response for finished outcomes (pure: no I/O)."""
    for outcome in outcomes.values():
        if outcome.error is not None or outcome.failed_elements:
            break
    else:  # every call answered in full (the common case): nothing failed to sort out
        body = assemble([c for c in plan.calls if c.name in outcomes], outcomes, plan.shaping)
        return MergedAnswer(orjson.dumps(body), complete=True)
    failed = {name: o for name, o in outcomes.items() if not o.ok}
    # a for_each call that failed for some elements: its answer is partial
    partial = {name: o for name, o in outcomes.items() if o.ok and o.failed_elements}
    decisive = {n: o for n, o in failed.items() if calls[n].required}
    decisive.update({n: o for n, o in partial.items() if calls[n].required})
    if len(failed) == len(outcomes):
        decisive = failed
    if decisive:
        passed = _passed_error(calls, decisive, failed, outcomes, plan.error_details)
        if passed is not None:
            return passed
        errors = [e for o in decisive.values() for e in _errors_of(o)]
        status, headers = _failure_status(errors, outcomes)
        names = ", ".join(decisive)
        return problem(
            status,
            f"call(s) failed: {names}",
            headers=headers,
            failed_calls={
                n: _describe_outcome(o, plan.error_details)
                for n, o in {**failed, **partial}.items()
            },
        )
    # the answer is made of the calls that ran for it (background calls run after it)
    body = assemble([c for c in plan.calls if c.name in outcomes], outcomes, plan.shaping)
    if plan.error_details and (failed or partial):
        body["_errors"] = {n: _describe_outcome(o, True) for n, o in {**failed, **partial}.items()}
    return MergedAnswer(orjson.dumps(body), complete=not (failed or partial))


_COMPLETE = (b"x-gateway-complete", b"true")
_INCOMPLETE = (b"x-gateway-complete", b"false")
_JSON = (b"content-type", b"application/json")


class MergedAnswer(Response):
    """A 200 with a merged JSON body: the headers Starlette's Response would make
    (`X-Gateway-Complete`, Content-Length, Content-Type, in that order), without encoding
    and scanning a header mapping on every request."""

    media_type = "application/json"

    def __init__(self, body: bytes, complete: bool) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [
            _COMPLETE if complete else _INCOMPLETE,
            (b"content-length", str(len(body)).encode()),
            _JSON,
        ]


def revalidated(response: Response, cache_control: str, if_none_match: str | None) -> Response:
    """A complete answer with the endpoint's Cache-Control and an ETag (a digest of the merged
    body), or 304 Not Modified when the client already has it. Partial and failed answers
    are never to be kept: `no-store`."""
    if response.status_code != 200 or response.headers.get("x-gateway-complete") != "true":
        response.headers["Cache-Control"] = "no-store"
        return response
    etag = '"' + hashlib.blake2b(response.body, digest_size=16).hexdigest() + '"'
    if if_none_match is not None and _matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": cache_control})
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = cache_control
    return response


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 13.1.2: `*`, or any listed tag equal to ours (weak comparison)."""
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


def _errors_of(outcome: Outcome) -> list[CallError | None]:
    """The errors that stand for a failed call: its own, or its failed elements'."""
    return [outcome.error] if outcome.error else list(outcome.failed_elements.values())


def _describe_outcome(outcome: Outcome, details: bool) -> dict[str, Any]:
    """A failed call, or a for_each call with failed elements: the first element's error
    and the failed indexes (`elements`)."""
    if outcome.error is not None or not outcome.failed_elements:
        return _describe(outcome.error, details)
    indexes = sorted(outcome.failed_elements)
    first = outcome.failed_elements[indexes[0]]
    return {
        "status": first.status,
        "error": f"{len(indexes)} of {len(outcome.value)} elements failed; "
        f"element {indexes[0]}: {first}",
        "elements": indexes,
    }


def _passed_error(
    calls: Mapping[str, CallPlan],
    decisive: Mapping[str, Outcome],
    failed: Mapping[str, Outcome],
    outcomes: Mapping[str, Outcome],
    details: bool,
) -> Response | None:
    """The backend's own 4xx answer, when a decisive failure comes from a `pass_errors` call
    (itself, or a call it needed, through any chain of skips); the first such call in config
    order wins, ahead of every other failure (a 4xx is about the client's request: retrying
    after a 504 elsewhere would only meet it again). None: no such failure."""
    for name in decisive:
        cause = _root_cause(name, outcomes)
        error = outcomes[cause].error
        if not (calls[cause].pass_errors and isinstance(error, BadStatus)):
            continue
        status = error.status
        if status is None or not 400 <= status < 500:
            continue
        incomplete = {"X-Gateway-Complete": "false"}
        if error.body is not None and error.content_type is not None and _is_json(error.body):
            return Response(
                error.body, status_code=status, media_type=error.content_type, headers=incomplete
            )
        return problem(
            status,
            f"call(s) failed: {cause}",
            headers=incomplete,
            failed_calls={n: _describe(o.error, details) for n, o in failed.items()},
        )
    return None


def _root_cause(name: str, outcomes: Mapping[str, Outcome]) -> str:
    """The call whose failure made `name` fail: itself, or what it was skipped for."""
    seen = {name}
    error = outcomes[name].error
    while isinstance(error, Skipped) and error.cause in outcomes and error.cause not in seen:
        name = error.cause
        seen.add(name)
        error = outcomes[name].error
    return name


def _is_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


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


def _observe(
    metrics: GatewayMetrics, endpoint: str, outcomes: Mapping[str, Outcome]
) -> tuple[str, ...]:
    """Observe each call's latency; the names of the calls that failed."""
    failed: list[str] = []
    for name, outcome in outcomes.items():
        if outcome.ok:
            kind = "ok"
        else:
            kind = type(outcome.error).__name__
            failed.append(name)
        metrics.called(endpoint, name, kind, outcome.elapsed)
    return tuple(failed)


def _observe_elements(
    metrics: GatewayMetrics, endpoint: str, outcomes: Mapping[str, Outcome]
) -> None:
    """Elements and requests of the for_each calls that ran (`sent` is None for others)."""
    for name, outcome in outcomes.items():
        if outcome.sent is None:
            continue
        metrics.for_each_requests.labels(endpoint, name).inc(outcome.sent)
        failed = len(outcome.failed_elements)
        if len(outcome.value) > failed:
            metrics.for_each_elements.labels(endpoint, name, "ok").inc(len(outcome.value) - failed)
        for error in outcome.failed_elements.values():
            metrics.for_each_elements.labels(endpoint, name, type(error).__name__).inc()
