"""Resilience policies: each wraps a `Call` and returns a `Call`; applied in one fixed order.

Outermost first (see docs/resilience.md for the why of each place):

    coalesce -> retry -> hedge -> bulkhead -> breaker (per host) -> timeout -> backend

* coalesce outermost: identical concurrent requests share everything below, retries included.
* retry outside hedge: a retry starts a fresh, possibly hedged, try; both stay idempotent-only.
* bulkhead inside retry and hedge: every try and every copy holds a slot while in flight.
* breaker inside the bulkhead: a refused call never reaches it, and its per-host choice skips
  open hosts, which takes a failing host out of the round-robin.
* timeout innermost: each try gets the full timeout, and the breaker sees timeouts as failures.

Backend-level state (breakers, bulkhead, retry budget, in-flight identical requests) is built
once per app when the backends are open (`Resilience.open`) and shared by every call to that
backend; `Resilience.wrap` builds the per-call chain from a call's resolved `CallPolicies`.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from gateway.backends import Backends
from gateway.backends.http import HttpUpstream, http_call
from gateway.policies.breaker import Breaker, State, guarded
from gateway.policies.bulkhead import Bulkhead, bulkhead
from gateway.policies.coalesce import Flights, coalesce
from gateway.policies.hedge import hedge
from gateway.policies.metrics import BREAKER_STATES, PolicyMetrics
from gateway.policies.resolve import CallPolicies
from gateway.policies.retry import RetryBudget, retry
from gateway.policies.timeout import timeout
from gateway.spec import GatewaySpec, ResilienceSpec
from gateway.types import Call

log = logging.getLogger("gateway.policies")


@dataclass(slots=True)
class BackendPolicies:
    """The shared policy state of one backend."""

    name: str
    call: Call
    hosts: tuple[tuple[Breaker, Call], ...]  # one per host when a breaker is configured
    bulkhead: Bulkhead
    budget: RetryBudget
    rng: random.Random
    rotation: Iterator[int] = field(default_factory=itertools.count)
    flights: Flights = field(default_factory=dict)


class Resilience:
    """The policies of one app; `open` once the backends are, then `wrap` each call once."""

    def __init__(self, metrics: PolicyMetrics) -> None:
        self.metrics = metrics
        self.backends: dict[str, BackendPolicies] = {}

    def __repr__(self) -> str:
        return f"<Resilience [{', '.join(self.backends) or 'not open'}]>"

    def open(self, spec: GatewaySpec, backends: Backends) -> None:
        """Build every backend's shared state (breakers start closed, counters at zero)."""
        for name, backend_spec in spec.backends.items():
            if name not in backends.calls:
                continue
            settings = (
                backend_spec if isinstance(backend_spec, ResilienceSpec) else ResilienceSpec()
            )
            heads = Bulkhead(name, settings.concurrency)
            hosts: tuple[tuple[Breaker, Call], ...] = ()
            if settings.breaker is not None:
                hosts = tuple(
                    (Breaker(name, host, settings.breaker, self._breaker_changed), call)
                    for host, call in _host_calls(name, backends)
                )
                for breaker, _ in hosts:
                    self.metrics.breaker_state.labels(name, breaker.host).set(0)
            self.backends[name] = BackendPolicies(
                name=name,
                call=backends.calls[name],
                hosts=hosts,
                bulkhead=heads,
                budget=RetryBudget(heads),
                rng=random.Random(),
            )

    def wrap(self, backend: str, policies: CallPolicies) -> Call:
        """The policy-wrapped Call for one call of an endpoint (build it once, reuse it)."""
        state, m = self.backends[backend], self.metrics
        timed = timeout(policies.timeout)
        if state.hosts:
            call = guarded(
                backend,
                [(breaker, timed(host_call)) for breaker, host_call in state.hosts],
                on_reject=m.circuit_open_rejected.labels(backend).inc,
                rotation=state.rotation,
            )
        else:
            call = timed(state.call)
        call = bulkhead(state.bulkhead, on_reject=m.bulkhead_rejected.labels(backend).inc)(call)
        if policies.hedge is not None:
            call = hedge(
                policies.hedge,
                on_sent=m.hedges_sent.labels(backend).inc,
                on_won=m.hedges_won.labels(backend).inc,
            )(call)
        if policies.retry is not None:
            call = retry(
                policies.retry,
                state.budget,
                on_retry=m.retries.labels(backend).inc,
                on_budget_exhausted=m.retry_budget_exhausted.labels(backend).inc,
                rng=state.rng,
            )(call)
        if policies.coalesce:
            call = coalesce(state.flights, on_coalesced=m.coalesced.labels(backend).inc)(call)
        return call

    def _breaker_changed(self, breaker: Breaker, old: State, new: State) -> None:
        log.warning("breaker %s %s: %s -> %s", breaker.backend, breaker.host, old, new)
        self.metrics.breaker_state.labels(breaker.backend, breaker.host).set(BREAKER_STATES[new])
        self.metrics.breaker_transitions.labels(breaker.backend, breaker.host, new).inc()


def _host_calls(name: str, backends: Backends) -> list[tuple[str, Call]]:
    """One Call per host: per base URL for http (sharing the backend's connection cap)."""
    upstream = backends.upstreams.get(name)
    if upstream is None or len(upstream.base_urls) == 1:
        host = upstream.base_urls[0] if upstream is not None else name
        return [(host, backends.calls[name])]
    return [
        (
            url,
            http_call(
                HttpUpstream(
                    name=name,
                    session=upstream.session,
                    base_urls=(url,),
                    slots=upstream.slots,
                    capacity=upstream.capacity,
                )
            ),
        )
        for url in upstream.base_urls
    ]
