"""A call's policy settings, resolved once at start-up from the call and its backend."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.models import CallSpec, HedgeSpec, ResilienceSpec, RetrySpec
from gateway.policies.cache import CachePolicy


@dataclass(frozen=True, slots=True)
class CallPolicies:
    """What wraps one call: the per-try timeout, and retry/hedge/coalesce if they apply."""

    timeout: float
    idempotent: bool
    retry: RetrySpec | None = None
    hedge: HedgeSpec | None = None
    coalesce: bool = False
    cache: CachePolicy | None = None


def resolve_policies(
    call: CallSpec,
    *,
    timeout: float,
    idempotent_by_default: bool,
    resilience: ResilienceSpec,
    place: str = "",
) -> CallPolicies:
    """The call's own settings win over its backend's (`timeout`, `resilience`); a call that
    is not idempotent is never repeated.

    Whether a call is idempotent unless it says so is its backend kind's answer (for http: a
    GET, HEAD or OPTIONS); any other call (a POST, a SQL statement, a legacy client method)
    is repeated only when marked `idempotent: true`.
    """
    idempotent = call.idempotent if call.idempotent is not None else idempotent_by_default
    retry = call.retry or resilience.retry
    hedge = call.hedge or resilience.hedge
    cache_spec = call.cache or resilience.cache
    cache = None
    if idempotent and cache_spec is not None:
        # a call's own cache is its own; the backend's is shared by the backend's calls
        name = f"{call.backend} {place}.{call.name}".strip() if call.cache else call.backend
        cache = CachePolicy(
            name,
            cache_spec.ttl,
            cache_spec.stale,
            cache_spec.max_entries,
            cache_spec.shared,
            cache_spec.store,
        )
    return CallPolicies(
        timeout=call.timeout if call.timeout is not None else timeout,
        idempotent=idempotent,
        retry=retry if idempotent and retry is not None and retry.attempts > 1 else None,
        hedge=hedge if idempotent and hedge is not None and hedge.max > 0 else None,
        coalesce=idempotent
        and (call.coalesce if call.coalesce is not None else resilience.coalesce),
        cache=cache,
    )
