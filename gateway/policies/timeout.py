"""Timeout policy: one try of a call is bounded by the call's `timeout`.

It sits innermost (just around the backend), so each retry and each hedged copy gets the full
timeout, and the breaker above it sees a timeout as a failure of the host rather than as a
cancellation. The endpoint deadline is enforced outside, by `execute`.
"""

from __future__ import annotations

import asyncio

from gateway.errors import CallTimeout
from gateway.types import BackendRequest, BackendResponse, Call, Policy


def timeout(seconds: float) -> Policy:
    """Fail a try with `CallTimeout` when it takes longer than `seconds`."""

    def policy(inner: Call) -> Call:
        async def call(request: BackendRequest) -> BackendResponse:
            try:
                async with asyncio.timeout(seconds):
                    return await inner(request)
            except TimeoutError:
                raise timed_out(seconds) from None

        return call

    return policy


def timed_out(seconds: float) -> CallTimeout:
    """The error of a try that took longer than its timeout of `seconds`."""
    return CallTimeout(f"no answer within the timeout of {seconds:g}s")
