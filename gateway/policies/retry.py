"""Retry policy: jittered exponential backoff, never past the deadline, within a retry budget.

Only idempotent calls are wrapped (the caller decides, see `gateway.policies.wrap`). A retry
needs three things: the error is listed in `on`, the backoff ends before the request's
`deadline`, and the backend's `RetryBudget` has room.

The budget is what stops a retry storm, and it counts events, not what is in flight at an
instant: over the last `WINDOW_SECONDS`, retries to a backend stay within
`max(min_retries, budget x calls)`, where calls are the calls made (their first tries). So a
backend that fails everything sees at most (1 + budget) x the calls, plus `min_retries` per
window when traffic is too light for the share to allow that many, however fast the
failures come back and however busy the gateway is. The former budget compared retries *in
flight* with normal calls *in flight*: when failures came back fast on a CPU-bound gateway
few calls were in flight at any instant, the minimum ruled, and 200 requests to an
always-503 backend sent it 1.95x (issue 11). This is Finagle's RetryBudget (deposits that
expire after a TTL) with the minimum as a floor rather than an added rate: an added
per-second rate would again make the ratio depend on the request rate.

Written as a loop rather than with tenacity: the budget and deadline checks sit between tries
and must be able to end the loop with the last error, which tenacity's hooks do not do cleanly.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.config.models import RetryOn, RetrySpec
from gateway.errors import BadStatus, CallError, CallTimeout, UpstreamUnavailable
from gateway.types import BackendRequest, BackendResponse, Call, Policy

WINDOW_SECONDS = 10.0
"""How far back the budget counts calls and retries (Finagle's default TTL)."""
_SLOTS = 10  # the window moves on in steps of WINDOW_SECONDS / _SLOTS
_ROUNDING = 1e-9  # 0.3 x 10 is 3.0000000000000004 in floats; 0.29 x 100 is 28.999999999999996


@dataclass(slots=True)
class RetryBudget:
    """Calls and retries to one backend over the last `WINDOW_SECONDS`, in a ring of slots."""

    backend: str
    clock: Callable[[], float] = time.monotonic
    _calls: int = 0  # first tries in the window
    _retries: int = 0  # retries in the window
    _call_slots: list[int] = field(default_factory=lambda: [0] * _SLOTS)
    _retry_slots: list[int] = field(default_factory=lambda: [0] * _SLOTS)
    _slot: int = 0  # the number (time // slot length) of the current slot

    def __post_init__(self) -> None:
        self._slot = self._now()

    def __repr__(self) -> str:
        return (
            f"<RetryBudget {self.backend} [{self.retries} retries, {self.calls} calls "
            f"in {WINDOW_SECONDS:g}s]>"
        )

    @property
    def calls(self) -> int:
        """Calls (first tries) in the window."""
        self._advance()
        return self._calls

    @property
    def retries(self) -> int:
        """Retries in the window."""
        self._advance()
        return self._retries

    def called(self) -> None:
        """Count a call (its first try): it adds `budget` of a retry to the allowance."""
        self._advance()
        self._call_slots[self._slot % _SLOTS] += 1
        self._calls += 1

    def try_acquire(self, share: float, minimum: int) -> bool:
        """Count a retry if `retries < max(minimum, share x calls)` in the window."""
        self._advance()
        if self._retries + 1 > max(minimum, share * self._calls) + _ROUNDING:
            return False
        self._retry_slots[self._slot % _SLOTS] += 1
        self._retries += 1
        return True

    def _now(self) -> int:
        return int(self.clock() * _SLOTS / WINDOW_SECONDS)

    def _advance(self) -> None:
        """Forget the slots that left the window since the last call."""
        now = self._now()
        for number in range(self._slot + 1, min(now, self._slot + _SLOTS) + 1):
            index = number % _SLOTS
            self._calls -= self._call_slots[index]
            self._retries -= self._retry_slots[index]
            self._call_slots[index] = self._retry_slots[index] = 0
        self._slot = max(self._slot, now)


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
            budget.called()
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
                await asyncio.sleep(delay)
                on_retry()
                try:
                    return await inner(request)
                except CallError as exc:
                    error = exc
            raise error

        return call

    return policy
