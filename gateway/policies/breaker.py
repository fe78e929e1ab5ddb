"""Circuit breakers, one per host, and the host choice that skips open ones.

States: closed -> open after `failures` consecutive failures (a success resets the count;
failures older than `window` are forgotten) -> half-open once `cooldown` has passed, when
exactly one probe call is let through -> closed if it succeeds, open again if it fails.

Consecutive rather than rate-based: it needs no minimum volume to be meaningful, a busy
backend with sporadic errors never trips it (every success resets the count), and the
`window` keeps a quiet backend from tripping on failures spread over hours.

A failure is what says the host is unwell: no connection, a timeout, or a 5xx. A 4xx or a
non-JSON body is the host answering, so it counts as a success. A cancelled call (the endpoint
deadline, a hedge that lost) counts as neither. While every host is open the call fails at once
with `CircuitOpen`, without touching the network.

Only calls admitted in the breaker's current state count: each admission carries the epoch it
was given in, and a state change starts a new epoch. So when a host dies under load, the first
`failures` in-flight calls open the circuit and the rest (stale now) are ignored, and a slow
call admitted while closed cannot close (or re-open) a half-open circuit in the probe's place.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.config.models import BreakerSpec
from gateway.errors import BadStatus, CallError, CallTimeout, CircuitOpen, UpstreamUnavailable
from gateway.types import BackendRequest, BackendResponse, Call

State = Literal["closed", "open", "half_open"]
OnChange = Callable[["Breaker", State, State], None]


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to send one call, given by `Breaker.allow` and handed back to `Breaker.settle`."""

    epoch: int
    probe: bool = False


class Breaker:
    """The state of one host's circuit; decisions only, no I/O (see `guarded`)."""

    def __init__(
        self,
        backend: str,
        host: str,
        settings: BreakerSpec,
        on_change: OnChange,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.host = host
        self.settings = settings
        self.state: State = "closed"
        self._on_change = on_change
        self._clock = clock
        self._failures: deque[float] = deque()
        self._opened_at = 0.0
        self._probing = False
        self._epoch = 0

    def __repr__(self) -> str:
        probe = ", probing" if self._probing else ""
        return (
            f"<Breaker {self.backend} {self.host} [{self.state}{probe}, "
            f"{len(self._failures)}/{self.settings.failures} failures]>"
        )

    def allow(self) -> Permit | None:
        """A permit if a call may go to this host now; in half-open only one: the probe."""
        if self.state == "open":
            if self._clock() - self._opened_at < self.settings.cooldown:
                return None
            self._change("half_open")
        if self.state == "half_open":
            if self._probing:
                return None
            self._probing = True
            return Permit(self._epoch, probe=True)
        return Permit(self._epoch)

    def settle(self, permit: Permit, healthy: bool | None) -> None:
        """Record how an allowed call ended: True ok, False failed, None cancelled."""
        if permit.epoch != self._epoch:
            return  # admitted under an earlier state: it says nothing about this one
        if permit.probe:
            self._probing = False
            if healthy is not None:
                # the probe decides: closed on success, another cooldown on failure
                if healthy:
                    self._change("closed")
                else:
                    self._open(self._clock())
            return  # a cancelled probe frees the slot: the next call probes
        if healthy is None:
            return
        if healthy:
            self._failures.clear()
            return
        now = self._clock()
        self._failures.append(now)
        while self._failures and self._failures[0] <= now - self.settings.window:
            self._failures.popleft()
        if len(self._failures) >= self.settings.failures:
            self._open(now)

    def reopens_in(self) -> float:
        """Seconds until an open circuit lets a probe through (0 unless open)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self._opened_at + self.settings.cooldown - self._clock())

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._change("open")

    def _change(self, new: State) -> None:
        old, self.state = self.state, new
        self._epoch += 1
        self._failures.clear()
        self._on_change(self, old, new)


def is_failure(error: CallError) -> bool:
    """Whether an error says the host is unwell (see the module docstring)."""
    if isinstance(error, BadStatus):
        return error.status is not None and error.status >= 500
    return isinstance(error, UpstreamUnavailable | CallTimeout)


def guarded(
    backend: str,
    hosts: Sequence[tuple[Breaker, Call]],
    *,
    on_reject: Callable[[], None],
    rotation: Iterator[int] | None = None,
) -> Call:
    """A Call over `hosts` in round-robin that skips hosts whose breaker refuses.

    `rotation` is shared by every call to the backend so they spread over the hosts together.
    """
    turns = rotation if rotation is not None else itertools.count()

    async def call(request: BackendRequest) -> BackendResponse:
        start = next(turns)
        for offset in range(len(hosts)):
            breaker, host_call = hosts[(start + offset) % len(hosts)]
            permit = breaker.allow()
            if permit is not None:
                return await _through(breaker, permit, host_call, request)
        on_reject()
        wait = min(breaker.reopens_in() for breaker, _ in hosts)
        raise CircuitOpen(f"{backend}: circuit open, not sent", retry_after=max(1, math.ceil(wait)))

    return call


async def _through(
    breaker: Breaker, permit: Permit, host_call: Call, request: BackendRequest
) -> BackendResponse:
    healthy: bool | None = None
    try:
        response = await host_call(request)
        healthy = True
        return response
    except CallError as exc:
        healthy = not is_failure(exc)
        raise
    finally:
        breaker.settle(permit, healthy)
