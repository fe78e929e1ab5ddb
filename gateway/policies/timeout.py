"""Timeout policy: one try of a call is bounded by the call's `timeout`.

It sits innermost (just around the backend), so each retry and each hedged copy gets the full
timeout, and the breaker above it sees a timeout as a failure of the host rather than as a
cancellation. The endpoint deadline is enforced outside, by `execute`.

The tries of one policy share a `Timeouts` (gateway/timers.py): the same length from now, so
they end in the order they start and one loop timer serves them all, where
`asyncio.timeout` armed one per try (+1.8 to +3.5 us a try against +7.9 to +11.6,
`python -m benchmarks.timers`).
"""

from __future__ import annotations

from gateway.errors import CallTimeout
from gateway.timers import Timeouts
from gateway.types import BackendRequest, BackendResponse, Call, Policy


def timeout(seconds: float) -> Policy:
    """Fail a try with `CallTimeout` when it takes longer than `seconds`."""
    timeouts = Timeouts()

    def policy(inner: Call) -> Call:
        async def call(request: BackendRequest) -> BackendResponse:
            try:
                with timeouts.within(seconds):
                    return await inner(request)
            except TimeoutError:  # ours, or one of the backend's own: a timeout all the same
                raise timed_out(seconds) from None

        return call

    return policy


def timed_out(seconds: float) -> CallTimeout:
    """The error of a try that took longer than its timeout of `seconds`."""
    return CallTimeout(f"no answer within the timeout of {seconds:g}s")
