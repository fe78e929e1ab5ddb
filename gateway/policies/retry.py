"""Retry policy: jittered exponential backoff, never past the deadline, within a retry budget.

Only idempotent calls are wrapped (the caller decides, see `gateway.policies.wrap`). A retry
needs three things: the error is listed in `on`, the backoff ends before the request's
`deadline`, and the backend's `RetryBudget` has room. The budget is what stops a retry storm:
retries in flight stay under `budget` x the backend's calls in flight (at least `min_retries`),
so a backend that fails everything sees little more than its normal request rate.

Written as a loop rather than with tenacity: the budget and deadline checks sit between tries
and must be able to end the loop with the last error, which tenacity's hooks do not do cleanly.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import BadStatus, CallError, CallTimeout, UpstreamUnavailable
from gateway.policies.bulkhead import Bulkhead
from gateway.spec import RetryOn, RetrySpec
from gateway.types import BackendRequest, BackendResponse, Call, Policy


@dataclass(slots=True)
class RetryBudget:
    """Retries in flight to one backend, capped by a share of that backend's calls in flight."""

    calls: Bulkhead  # counts the backend's tries in flight, capped or not
    retrying: int = 0

    def __repr__(self) -> str:
        return (
            f"<RetryBudget {self.calls.backend} "
            f"[{self.retrying} retrying, {self.calls.in_flight} in flight]>"
        )

    def try_acquire(self, share: float, minimum: int) -> bool:
        """Take a retry slot if `retrying < max(minimum, share x calls in flight)`."""
        if self.retrying >= max(minimum, int(share * self.calls.in_flight)):
            return False
        self.retrying += 1
        return True

    def release(self) -> None:
        self.retrying -= 1


def retryable(error: CallError, on: list[RetryOn]) -> bool:
    """Whether `on` lists this kind of failure."""
    if isinstance(error, CallTimeout):
        return "timeout" in on
    if isinstance(error, UpstreamUnavailable):
        return "connect" in on
    if isinstance(error, BadStatus):
        return error.status in on
    return False


def backoff_delay(retry: int, settings: RetrySpec, rng: random.Random) -> float:
    """The wait before retry number `retry` (1-based): doubling, capped, jittered to [50%, 100%].

    Jitter spreads the retries of calls that failed together, so they do not return together.
    """
    cap = min(settings.max_backoff, settings.backoff * 2 ** (retry - 1))
    return rng.uniform(cap / 2, cap)


def retry(
    settings: RetrySpec,
    budget: RetryBudget,
    *,
    on_retry: Callable[[], None],
    on_budget_exhausted: Callable[[], None],
    rng: random.Random,
) -> Policy:
    """Retry failed tries of a call as `settings` allow; re-raise the last error otherwise."""

    def policy(inner: Call) -> Call:
        async def call(request: BackendRequest) -> BackendResponse:
            try:
                return await inner(request)
            except CallError as exc:
                error = exc
            loop = asyncio.get_running_loop()
            for attempt in range(1, settings.attempts):
                if not retryable(error, settings.on):
                    break
                delay = backoff_delay(attempt, settings, rng)
                if request.deadline is not None and loop.time() + delay >= request.deadline:
                    break
                if not budget.try_acquire(settings.budget, settings.min_retries):
                    on_budget_exhausted()
                    break
                try:
                    await asyncio.sleep(delay)
                    on_retry()
                    return await inner(request)
                except CallError as exc:
                    error = exc
                finally:
                    budget.release()
            raise error

        return call

    return policy
