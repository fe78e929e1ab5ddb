"""The rate-limit step of an endpoint: its limits (`rate_limit: [per_user, per_ip]`) taken at
once, after authentication (keys may read `{auth.sub}`).

Past a limit the answer is **429** problem+json with `Retry-After` (whole seconds until the
refused buckets hold a token again). Every answer of a limited endpoint, 429 or not, carries
the IETF draft's headers (draft-ietf-httpapi-ratelimit-headers-08):
`RateLimit-Policy: "per_user";q=100;w=60` (the limit as configured: q requests per w seconds)
and `RateLimit: "per_user";r=19;t=3` (requests left now, seconds until the bucket is full).
`/metrics` counts `gateway_rate_limit_requests{limit, decision}`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from gateway.engine.context import RequestContext
from gateway.web.guard_metrics import GuardMetrics
from gateway.web.problems import problem
from gateway.web.ratelimit.buckets import WHOLE, Limit, LocalBuckets, Take, Verdict
from gateway.web.steps import Step, add_response_headers


class Limiter(Protocol):
    """Where buckets are kept: this process, or Redis (gateway/web/ratelimit/shared.py)."""

    def decide(self, take: Take) -> Verdict | None:
        """The take decided at once, in this process, when it can be (its buckets here, or
        a lease of shared tokens); None when only `take` can decide it."""
        ...

    async def take(self, take: Take) -> Verdict: ...


class ProcessLimiter:
    """Buckets of this process only (no `cluster.redis`)."""

    def __init__(self, local: LocalBuckets) -> None:
        self.local = local

    def __repr__(self) -> str:
        return f"<ProcessLimiter {self.local!r}>"

    def decide(self, take: Take) -> Verdict:
        return self.local.take(take, time.monotonic())

    async def take(self, take: Take) -> Verdict:
        return self.decide(take)


def rate_limit_step(limiter: Limiter, limits: Sequence[Limit], metrics: GuardMetrics) -> Step:
    """The step of an endpoint with `rate_limit`."""
    ordered = tuple(limits)
    # per request only the take and the `RateLimit` numbers: the rest is made here, once
    policy = ", ".join(f'"{x.name}";q={x.quota};w={x.window}' for x in ordered).encode()
    heads = ratelimit_heads(ordered)
    allowed = [metrics.rate_limited.labels(x.name, "allowed") for x in ordered]
    limited = [metrics.rate_limited.labels(x.name, "limited") for x in ordered]
    policy_header = (b"ratelimit-policy", policy)
    decide, take = limiter.decide, limiter.take

    async def step(request: Request, context: RequestContext) -> RequestContext | Response:
        sources = context.sources
        wanted = tuple([(limit, limit.bucket(sources)) for limit in ordered])
        verdict = decide(wanted) or await take(wanted)
        state = ratelimit_value(heads, verdict.tokens)
        if verdict.allowed:
            for counter in allowed:
                counter.inc()
            add_response_headers(request, (policy_header, (b"ratelimit", state)))
            return context
        refused = [(x, t) for x, t in zip(ordered, verdict.tokens, strict=True) if t < WHOLE]
        for index, (limit, _) in enumerate(zip(ordered, verdict.tokens, strict=True)):
            if any(limit is x for x, _ in refused):
                limited[index].inc()
        wait = max(1, max(math.ceil((1 - t) / x.rate) for x, t in refused))
        names = ", ".join(x.name for x, _ in refused)
        return problem(
            429,
            f"rate limit {names} reached; retry in {wait}s",
            headers={
                "Retry-After": str(wait),
                "RateLimit-Policy": policy.decode(),
                "RateLimit": state.decode(),
            },
        )

    return step


def ratelimit_heads(limits: Sequence[Limit]) -> tuple[tuple[Limit, bytes], ...]:
    """What `ratelimit_value` needs of each limit, made once per endpoint."""
    return tuple((x, f'"{x.name}";r='.encode()) for x in limits)


def ratelimit_value(heads: Sequence[tuple[Limit, bytes]], tokens: Sequence[float]) -> bytes:
    """The `RateLimit` value: per limit, whole requests left (`%d` of a positive float is its
    floor) and whole seconds until the bucket is full."""
    if len(tokens) == 1:  # the common case, without a list to join
        (limit, head), held = heads[0], tokens[0]
        return b"%s%d;t=%d" % (head, held if held > 0 else 0, _full_in(limit, held))
    return b", ".join(
        [
            b"%s%d;t=%d" % (head, held if held > 0 else 0, _full_in(limit, held))
            for (limit, head), held in zip(heads, tokens, strict=True)
        ]
    )


def _full_in(limit: Limit, held: float) -> int:
    return math.ceil((limit.capacity - held) / limit.rate) if held < limit.capacity else 0
