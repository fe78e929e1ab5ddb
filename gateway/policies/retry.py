"""Retry policy: jittered exponential backoff, never past the deadline, within a retry budget.

Only idempotent calls are wrapped (the caller decides, see `gateway.policies.wrap`). A retry
needs three things: the error is listed in `on`, the backoff ends before the request's
`deadline`, and the backend's `RetryBudget` has room. The budget is what stops a retry storm:
retries under way stay under `budget` x the backend's other calls in flight (its normal
traffic), with `min_retries` always allowed. A retry holds its slot from the start of its
backoff to the end of its try, so retry requests are at most `budget` of the normal requests
and a backend that fails everything sees at most ~(1 + budget)x its normal request rate
(plus `min_retries` per backoff period when traffic is light), not `attempts` x.

Written as a loop rather than with tenacity: the budget and deadline checks sit between tries
and must be able to end the loop with the last error, which tenacity's hooks do not do cleanly.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config.models import RetryOn, RetrySpec
from gateway.errors import BadStatus, CallError, CallTimeout, UpstreamUnavailable
from gateway.policies.bulkhead import Bulkhead
from gateway.types import BackendRequest, BackendResponse, Call, Policy


@dataclass(slots=True)
class RetryBudget:
    """Retries under way to one backend, capped by a share of its normal calls in flight."""

    calls: Bulkhead  # counts the backend's tries in flight, capped or not
    retrying: int = 0  # retries under way: backing off, or in their try
    retry_tries: int = 0  # of those, in their try now (so also in `calls.in_flight`)

    def __repr__(self) -> str:
        return (
            f"<RetryBudget {self.calls.backend} "
            f"[{self.retrying} retrying, {self.calls.in_flight} in flight]>"
        )

    def try_acquire(self, share: float, minimum: int) -> bool:
        """Take a retry slot if `retrying < max(minimum, share x normal calls in flight)`.

        Normal calls are the tries in flight that are not retries: counting the retries
        too would let them grow into their own budget.
        """
        normal = self.calls.in_flight - self.retry_tries
        if self.retrying >= max(minimum, int(share * normal)):
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
                    budget.retry_tries += 1
                    try:
                        return await inner(request)
                    finally:
                        budget.retry_tries -= 1
                except CallError as exc:
                    error = exc
                finally:
                    budget.release()
            raise error

        return call

    return policy
