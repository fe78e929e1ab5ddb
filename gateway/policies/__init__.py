"""Resilience policies: each wraps a `Call` and returns a `Call`; applied in one fixed order.

Outermost first (see docs/resilience.md for the why of each place):

    cache -> coalesce -> retry -> hedge -> bulkhead -> breaker (per host) -> timeout -> backend

* cache outermost: a hit touches nothing below; misses of one key share one call below it.
* coalesce outermost: identical concurrent requests share everything below, retries included.
* retry outside hedge: a retry starts a fresh, possibly hedged, try; both stay idempotent-only.
* bulkhead inside retry and hedge: every try and every copy holds a slot while in flight.
* breaker inside the bulkhead: a refused call never reaches it, and its per-host choice skips
  open hosts, which takes a failing host out of the round-robin.
* timeout innermost: each try gets the full timeout, and the breaker sees timeouts as failures.
  With nothing between them (no breaker, no tracing) bulkhead and timeout are one coroutine
  (`timed_bulkhead`): the same order, a frame less per call.

Backend-level state (breakers, bulkhead, retry budget, in-flight identical requests) is built
once per app when the backends are open and shared by every call to that backend;
`Resilience.wrap` (chain.py) builds one call's chain from its resolved `CallPolicies`.
"""
