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
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

from gateway.errors import BadStatus, CallError, CallTimeout, CircuitOpen, UpstreamUnavailable
from gateway.spec import BreakerSpec
from gateway.types import BackendRequest, BackendResponse, Call

State = Literal["closed", "open", "half_open"]
OnChange = Callable[["Breaker", State, State], None]


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

    def __repr__(self) -> str:
        return (
            f"<Breaker {self.backend} {self.host} [{self.state}, "
            f"{len(self._failures)}/{self.settings.failures} failures]>"
        )

    def allow(self) -> bool:
        """May a call go to this host now? In half-open, True once: the caller is the probe."""
        if self.state == "open":
            if self._clock() - self._opened_at < self.settings.cooldown:
                return False
            self._change("half_open")
        if self.state == "half_open":
            if self._probing:
                return False
            self._probing = True
        return True

    def settle(self, healthy: bool | None) -> None:
        """Record how an allowed call ended: True ok, False failed, None cancelled."""
        was_probe, self._probing = self._probing, False
        if healthy is None:
            return  # a cancelled call says nothing about the host; a probe slot is freed
        if healthy:
            self._failures.clear()
            if self.state == "half_open" and was_probe:
                self._change("closed")
            return
        now = self._clock()
        if self.state == "half_open":
            self._open(now)
            return
        self._failures.append(now)
        while self._failures and self._failures[0] <= now - self.settings.window:
            self._failures.popleft()
        if self.state == "closed" and len(self._failures) >= self.settings.failures:
            self._open(now)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._failures.clear()
        self._change("open")

    def _change(self, new: State) -> None:
        old, self.state = self.state, new
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
            if breaker.allow():
                return await _through(breaker, host_call, request)
        on_reject()
        raise CircuitOpen(f"{backend}: circuit open, not sent")

    return call


async def _through(breaker: Breaker, host_call: Call, request: BackendRequest) -> BackendResponse:
    healthy: bool | None = None
    try:
        response = await host_call(request)
        healthy = True
        return response
    except CallError as exc:
        healthy = not is_failure(exc)
        raise
    finally:
        breaker.settle(healthy)
