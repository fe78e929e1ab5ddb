"""The policy chain of each call, built once at start-up from its backend's shared state.

`Resilience` holds the state every call to a backend shares (breakers per host, the
bulkhead, the retry budget, in-flight identical requests); `wrap` builds one call's chain in
the fixed order drawn in `gateway/policies/__init__.py`.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway.config.models import ResilienceSpec
from gateway.policies.breaker import Breaker, State, guarded
from gateway.policies.bulkhead import Bulkhead, bulkhead, timed_bulkhead
from gateway.policies.cache import Caches, cached
from gateway.policies.coalesce import Flights, coalesce
from gateway.policies.hedge import hedge
from gateway.policies.metrics import BREAKER_STATES, PolicyMetrics
from gateway.policies.resolve import CallPolicies
from gateway.policies.retry import RetryBudget, retry
from gateway.policies.shared_cache import shared_cached
from gateway.policies.timeout import timeout
from gateway.policies.tracing import CallTrace, call_scope, refusal_event, traced_try
from gateway.types import Call, Policy

log = logging.getLogger("gateway.policies")


class LiveCalls(Protocol):
    """What the chain needs of an open backend (a `LiveBackend` of gateway/backends)."""

    @property
    def call(self) -> Call: ...

    @property
    def hosts(self) -> tuple[tuple[str, Call], ...]:
        """One Call per host, for per-host breakers."""
        ...

    @property
    def resilience(self) -> ResilienceSpec:
        """The backend's own policy settings."""
        ...


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
    host: str | None = None  # the one host, when the backend has one
    flights: Flights = field(default_factory=dict)


class Resilience:
    """The policies of one app's live backends; `wrap` each call once, at start-up."""

    def __init__(
        self,
        backends: Mapping[str, LiveCalls],
        metrics: PolicyMetrics,
        caches: Caches,
        inherited: Mapping[str, BackendPolicies] | None = None,
    ) -> None:
        """Build every backend's shared state (breakers start closed, counters at zero);
        a backend in `inherited` (a reload, the backend unchanged) keeps its own."""
        self.metrics = metrics
        self.caches = caches
        self.backends: dict[str, BackendPolicies] = {}
        for name, live in backends.items():
            if inherited is not None and name in inherited:
                self.backends[name] = inherited[name]
                continue
            policy = live.resilience
            heads = Bulkhead(name, policy.concurrency)
            hosts: tuple[tuple[Breaker, Call], ...] = ()
            if policy.breaker is not None:
                hosts = tuple(
                    (Breaker(name, host, policy.breaker, self._breaker_changed), call)
                    for host, call in live.hosts
                )
                for breaker, _ in hosts:
                    self.metrics.breaker_state.labels(name, breaker.host).set(0)
            self.backends[name] = BackendPolicies(
                name=name,
                call=live.call,
                hosts=hosts,
                bulkhead=heads,
                budget=RetryBudget(name),
                rng=random.Random(),
                host=live.hosts[0][0] if len(live.hosts) == 1 else None,
            )

    def __repr__(self) -> str:
        return f"<Resilience [{', '.join(self.backends) or 'no backends'}]>"

    def wrap(self, backend: str, policies: CallPolicies, trace: CallTrace | None = None) -> Call:
        """The policy-wrapped Call for one call of an endpoint (build it once, reuse it).

        With `trace` (tracing on), each try is a span (policies/tracing.py) and refusals
        are events; without it the chain is the same as ever."""
        state, m = self.backends[backend], self.metrics
        timed = _timed(timeout(policies.timeout))
        circuit_open: Callable[[], None] = m.circuit_open_rejected.labels(backend).inc
        bulkhead_full: Callable[[], None] = m.bulkhead_rejected.labels(backend).inc
        if trace is not None:
            timed = _traced(trace, timeout(policies.timeout))
            circuit_open = refusal_event(circuit_open, trace.name, "circuit_open")
            bulkhead_full = refusal_event(bulkhead_full, trace.name, "bulkhead_full")
        if state.hosts:
            call = guarded(
                backend,
                [(breaker, timed(host_call, breaker.host)) for breaker, host_call in state.hosts],
                on_reject=circuit_open,
                rotation=state.rotation,
            )
            call = bulkhead(state.bulkhead, on_reject=bulkhead_full)(call)
        elif trace is None:  # nothing between the bulkhead and the timeout: one frame
            call = timed_bulkhead(state.bulkhead, policies.timeout, bulkhead_full)(state.call)
        else:
            call = bulkhead(state.bulkhead, on_reject=bulkhead_full)(timed(state.call, state.host))
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
        if trace is not None and (policies.retry is not None or policies.hedge is not None):
            # only a call that can try more than once numbers its tries; without a scope
            # every try is a first (one frame and a context variable less per call)
            call = call_scope()(call)
        if policies.cache is not None:
            redis = self.caches.redis
            if policies.cache.store == "redis" and redis is not None:
                call = shared_cached(policies.cache, self.caches, redis)(call)
            else:
                call = cached(policies.cache, self.caches)(call)
        return call

    def breakers(self, backend: str) -> tuple[Breaker, ...]:
        """The backend's breakers, one per host (none without a `breaker:`), for /status."""
        return tuple(breaker for breaker, _ in self.backends[backend].hosts)

    def _breaker_changed(self, breaker: Breaker, old: State, new: State) -> None:
        log.warning("breaker %s %s: %s -> %s", breaker.backend, breaker.host, old, new)
        self.metrics.breaker_state.labels(breaker.backend, breaker.host).set(BREAKER_STATES[new])
        self.metrics.breaker_transitions.labels(breaker.backend, breaker.host, new).inc()


HostPolicy = Callable[[Call, str | None], Call]
"""The innermost wrap of one host's Call (the host is None when not known)."""


def _timed(per_try: Policy) -> HostPolicy:
    def wrap(call: Call, host: str | None) -> Call:
        return per_try(call)

    return wrap


def _traced(trace: CallTrace, per_try: Policy) -> HostPolicy:
    """The innermost wrap with a span per try around the timeout."""

    def wrap(call: Call, host: str | None) -> Call:
        return traced_try(trace, host)(per_try(call))

    return wrap
