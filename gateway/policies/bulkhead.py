"""Bulkhead policy: a per-backend cap on calls in flight; over the cap a call fails at once.

Unlike `max_connections` (a semaphore: excess calls wait), a full bulkhead refuses: a slow or
black-holed backend then holds at most `concurrency` calls, their sockets and their memory,
and everything else keeps its share of the process. Without a cap it still counts the calls in
flight, which the retry budget reads.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.errors import BulkheadFull
from gateway.policies.timeout import timed_out
from gateway.timers import Timeouts
from gateway.types import BackendRequest, BackendResponse, Call, Policy


class Bulkhead:
    """Calls in flight to one backend (each try and each hedged copy counts once)."""

    def __init__(self, backend: str, capacity: int | None) -> None:
        self.backend = backend
        self.capacity = capacity
        self.in_flight = 0

    def __repr__(self) -> str:
        cap = "unbounded" if self.capacity is None else str(self.capacity)
        return f"<Bulkhead {self.backend} [{self.in_flight}/{cap} in flight]>"

    def full(self) -> bool:
        return self.capacity is not None and self.in_flight >= self.capacity


def bulkhead(state: Bulkhead, on_reject: Callable[[], None]) -> Policy:
    """Refuse a call with `BulkheadFull` when `state` is at capacity, else count it in flight."""

    def policy(inner: Call) -> Call:
        async def call(request: BackendRequest) -> BackendResponse:
            # check and count in one synchronous step: no await between them, so no race
            if state.full():
                on_reject()
                raise _full(state)
            state.in_flight += 1
            try:
                return await inner(request)
            finally:
                state.in_flight -= 1

        return call

    return policy


def timed_bulkhead(state: Bulkhead, seconds: float, on_reject: Callable[[], None]) -> Policy:
    """`bulkhead(state, on_reject)` around `timeout(seconds)` (gateway/policies/timeout.py)
    in one coroutine frame: what a chain is when nothing sits between the two (no breaker,
    no tracing), which is every call of a backend without resilience settings. A frame
    less per call, and per resumption of the call's await chain. Its tries share one
    `Timeouts`, as `timeout`'s do."""
    timeouts = Timeouts()

    def policy(inner: Call) -> Call:
        async def call(request: BackendRequest) -> BackendResponse:
            if state.full():
                on_reject()
                raise _full(state)
            state.in_flight += 1
            try:
                with timeouts.within(seconds):
                    return await inner(request)
            except TimeoutError:  # ours, or one of the backend's own: a timeout all the same
                raise timed_out(seconds) from None
            finally:
                state.in_flight -= 1

        return call

    return policy


def _full(state: Bulkhead) -> BulkheadFull:
    return BulkheadFull(
        f"{state.backend} has {state.in_flight} calls in flight (concurrency cap)",
        retry_after=1,  # calls in flight end within a timeout; 1 s is the floor
    )
