"""A call's policy settings, resolved once at start-up from the call and its backend."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.spec import Backend, CallSpec, HedgeSpec, ResilienceSpec, RetrySpec

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class CallPolicies:
    """What wraps one call: the per-try timeout, and retry/hedge/coalesce if they apply."""

    timeout: float
    idempotent: bool
    retry: RetrySpec | None = None
    hedge: HedgeSpec | None = None
    coalesce: bool = False


def resolve_policies(call: CallSpec, backend: Backend) -> CallPolicies:
    """The call's own settings win over its backend's; a non-idempotent call is never repeated.

    Idempotent by default means an http GET, HEAD or OPTIONS; any other call (a POST, a SQL
    statement, a legacy client method) is repeated only when marked `idempotent: true`.
    """
    defaults = backend if isinstance(backend, ResilienceSpec) else ResilienceSpec()
    idempotent = (
        call.idempotent
        if call.idempotent is not None
        else backend.kind == "http" and call.method.upper() in SAFE_METHODS
    )
    retry = call.retry or defaults.retry
    hedge = call.hedge or defaults.hedge
    return CallPolicies(
        timeout=call.timeout if call.timeout is not None else backend.timeout,
        idempotent=idempotent,
        retry=retry if idempotent and retry is not None and retry.attempts > 1 else None,
        hedge=hedge if idempotent and hedge is not None and hedge.max > 0 else None,
        coalesce=idempotent and (call.coalesce if call.coalesce is not None else defaults.coalesce),
    )
