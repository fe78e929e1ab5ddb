"""The resilience policies in-process: pure logic as tables, wrappers over fake Calls.

No network and no sleeps: clocks are injected, and fake backends block on events the test
controls, so every interleaving here is the one the test chose.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from gateway.backends.http import HttpBackend
from gateway.backends.legacy import LegacyBackend
from gateway.backends.live import LiveBackend
from gateway.backends.registry import traits_of
from gateway.config.models import BackendSpec, BreakerSpec, CallSpec, HedgeSpec, RetrySpec
from gateway.errors import (
    BadBody,
    BadStatus,
    BulkheadFull,
    CallError,
    CallTimeout,
    CircuitOpen,
    Refused,
    UpstreamUnavailable,
)
from gateway.policies.breaker import Breaker, Permit, State, guarded, is_failure
from gateway.policies.bulkhead import Bulkhead, bulkhead, timed_bulkhead
from gateway.policies.cache import Caches
from gateway.policies.chain import Resilience
from gateway.policies.coalesce import Flights, coalesce, coalesce_key
from gateway.policies.hedge import hedge
from gateway.policies.metrics import PolicyMetrics
from gateway.policies.resolve import CallPolicies, resolve_policies
from gateway.policies.retry import WINDOW_SECONDS, RetryBudget, backoff_delay, retry, retryable
from gateway.policies.timeout import timeout
from gateway.types import BackendRequest, BackendResponse, Call, Policy

OK = BackendResponse(200, {"ok": True})

# --- breaker: a scripted state machine on an injected clock ---------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_script(script: str, spec: BreakerSpec) -> tuple[Breaker, list[str]]:
    """Run space-separated steps against a fresh breaker; returns it and its transitions.

    `ok`/`fail`/`cancel`: one call admitted and ended so; `no`: a call refused;
    `+N`: N seconds pass; `start:x`: admit call x and keep it going; `x:ok|fail|cancel`: end it.
    """
    clock = Clock()
    changes: list[str] = []

    def on_change(breaker: Breaker, old: State, new: State) -> None:
        changes.append(f"{old}>{new}")

    breaker = Breaker("b", "h", spec, on_change, clock=clock)
    held: dict[str, Permit] = {}
    outcome = {"ok": True, "fail": False, "cancel": None}
    for step in script.split():
        if step.startswith("+"):
            clock.now += float(step[1:])
        elif step == "no":
            assert breaker.allow() is None, f"{step}: expected a refusal, {breaker!r}"
        elif step.startswith("start:"):
            permit = breaker.allow()
            assert permit is not None, f"{step}: refused, {breaker!r}"
            held[step[6:]] = permit
        elif ":" in step:
            name, how = step.split(":")
            breaker.settle(held.pop(name), outcome[how])
        else:
            permit = breaker.allow()
            assert permit is not None, f"{step}: refused, {breaker!r}"
            breaker.settle(permit, outcome[step])
    return breaker, changes


SPEC = BreakerSpec(failures=3, window=10, cooldown=5)


@pytest.mark.parametrize(
    ("script", "state", "changes"),
    [
        ("fail fail", "closed", []),
        ("fail fail fail no", "open", ["closed>open"]),
        # consecutive: a success in between resets the count
        ("fail fail ok fail fail ok", "closed", []),
        # 4xx-like answers are successes (see is_failure); cancelled calls count as nothing
        ("fail fail cancel fail", "open", ["closed>open"]),
        # failures older than the window are forgotten
        ("fail fail +10.5 fail fail", "closed", []),
        ("fail +4 fail +4 fail", "open", ["closed>open"]),
        # open until the cooldown has passed, then one probe
        ("fail fail fail +4.9 no", "open", ["closed>open"]),
        (
            "fail fail fail +5 ok ok",
            "closed",
            ["closed>open", "open>half_open", "half_open>closed"],
        ),
        ("fail fail fail +5 fail no", "open", ["closed>open", "open>half_open", "half_open>open"]),
        # a failed probe starts a fresh cooldown, measured from the probe's failure
        (
            "fail fail fail +5 start:p +3 p:fail +4 no +1 ok",
            "closed",
            [
                "closed>open",
                "open>half_open",
                "half_open>open",
                "open>half_open",
                "half_open>closed",
            ],
        ),
        # exactly one probe at a time; a cancelled probe lets the next call probe
        (
            "fail fail fail +5 start:p no no p:cancel ok",
            "closed",
            ["closed>open", "open>half_open", "half_open>closed"],
        ),
        # after closing, the count starts from zero
        (
            "fail fail fail +5 ok fail fail",
            "closed",
            ["closed>open", "open>half_open", "half_open>closed"],
        ),
    ],
)
def test_breaker_state_machine(script: str, state: str, changes: list[str]) -> None:
    breaker, seen = run_script(script, SPEC)
    assert breaker.state == state, repr(breaker)
    assert seen == changes


@pytest.mark.parametrize(
    ("script", "state", "changes"),
    [
        # a host dies under load: 3 failures open it, the other in-flight failures are stale
        (
            "start:a start:b start:c start:d start:e start:f start:g a:fail b:fail c:fail d:fail e:fail f:fail g:fail +5 ok",
            "closed",
            ["closed>open", "open>half_open", "half_open>closed"],
        ),
        # a slow call admitted while closed ends ok during half-open: the probe still decides
        (
            "start:slow fail fail fail +5 start:p slow:ok no p:fail no",
            "open",
            ["closed>open", "open>half_open", "half_open>open"],
        ),
        # ...and its failure does not re-open the circuit the probe just closed
        (
            "start:slow fail fail fail +5 ok slow:fail fail fail",
            "closed",
            ["closed>open", "open>half_open", "half_open>closed"],
        ),
    ],
)
def test_breaker_ignores_calls_admitted_under_an_earlier_state(
    script: str, state: str, changes: list[str]
) -> None:
    breaker, seen = run_script(script, SPEC)
    assert breaker.state == state, repr(breaker)
    assert seen == changes


def test_breaker_tells_when_it_reopens() -> None:
    breaker, _ = run_script("fail fail fail +2", SPEC)
    assert breaker.reopens_in() == pytest.approx(3.0)
    closed, _ = run_script("fail", SPEC)
    assert closed.reopens_in() == 0.0


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (UpstreamUnavailable("refused"), True),
        (CallTimeout("slow"), True),
        (BadStatus("boom", status=500), True),
        (BadStatus("unavailable", status=503), True),
        (BadStatus("not found", status=404), False),
        (BadStatus("throttled", status=429), False),
        (BadBody("html", status=200), False),
        (CircuitOpen("open", retry_after=1), False),
        (BulkheadFull("full", retry_after=1), False),
    ],
)
def test_what_counts_as_a_host_failure(error: CallError, failure: bool) -> None:
    assert is_failure(error) is failure


# --- retry: what is retried, backoff bounds, the budget -------------------------------------


@pytest.mark.parametrize(
    ("error", "on", "expected"),
    [
        (UpstreamUnavailable("reset"), ["connect"], True),
        (UpstreamUnavailable("reset"), ["timeout", 503], False),
        (CallTimeout("slow"), ["timeout"], True),
        (CallTimeout("slow"), ["connect"], False),
        (BadStatus("x", status=503), ["connect", 503], True),
        (BadStatus("x", status=500), ["connect", 503], False),
        (BadStatus("x", status=404), [502, 503, 504], False),
        (CircuitOpen("open", retry_after=1), ["connect", "timeout", 503], False),
        (BulkheadFull("full", retry_after=1), ["connect", "timeout", 503], False),
        (BadBody("html", status=200), ["connect", "timeout", 503], False),
    ],
)
def test_retryable(error: CallError, on: list[str | int], expected: bool) -> None:
    assert retryable(error, on) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("retry_number", "cap"),
    [(1, 0.05), (2, 0.1), (3, 0.2), (4, 0.4), (5, 0.8), (6, 1.0), (9, 1.0)],
)
def test_backoff_doubles_is_capped_and_jittered_within_half_to_full(
    retry_number: int, cap: float
) -> None:
    settings = RetrySpec(backoff=0.05, max_backoff=1.0)
    rng = random.Random(7)
    delays = [backoff_delay(retry_number, settings, rng) for _ in range(500)]
    assert min(delays) >= cap / 2 and max(delays) <= cap
    # jittered: spread over the interval, not one value
    assert max(delays) - min(delays) > cap / 4


@pytest.mark.parametrize(
    ("calls", "retries", "share", "minimum", "allowed"),
    [
        (0, 0, 0.2, 3, True),  # the minimum: a quiet backend may still retry
        (0, 2, 0.2, 3, True),
        (0, 3, 0.2, 3, False),
        (10, 2, 0.2, 3, True),  # 20% of 10 is 2: the minimum (3) still rules
        (10, 3, 0.2, 3, False),
        (50, 9, 0.2, 3, True),  # 20% of 50 is 10
        (50, 10, 0.2, 3, False),
        (200, 39, 0.2, 3, True),  # 200 calls: never more than 40 retries, however timed
        (200, 40, 0.2, 3, False),
        (50, 0, 0.0, 0, False),  # no budget at all: never retry
        (100, 49, 0.5, 1, True),
        (100, 50, 0.5, 1, False),
        (10, 2, 0.3, 0, True),  # 0.3 x 10 is 3.0000000000000004 in floats: 3, not 4
        (10, 3, 0.3, 0, False),
        (100, 28, 0.29, 0, True),  # 0.29 x 100 is 28.999999999999996: 29
        (100, 29, 0.29, 0, False),
    ],
)
def test_retry_budget(calls: int, retries: int, share: float, minimum: int, allowed: bool) -> None:
    budget = RetryBudget("b", clock=Clock())
    for _ in range(calls):
        budget.called()
    for _ in range(retries):
        assert budget.try_acquire(1.0, 10**6)  # set up the count whatever the share
    assert budget.try_acquire(share, minimum) is allowed
    assert (budget.calls, budget.retries) == (calls, retries + allowed)


def test_retry_budget_counts_only_the_last_window() -> None:
    clock = Clock()
    budget = RetryBudget("b", clock=clock)
    for _ in range(100):
        budget.called()
    assert sum(budget.try_acquire(0.2, 3) for _ in range(30)) == 20
    clock.now += WINDOW_SECONDS / 2  # half a window on: the calls still count
    assert not budget.try_acquire(0.2, 3)
    for _ in range(50):
        budget.called()
    assert sum(budget.try_acquire(0.2, 3) for _ in range(30)) == 10  # 20% of 150 is 30
    clock.now += WINDOW_SECONDS / 2 + 0.01  # the first 100 calls and 20 retries are forgotten
    assert (budget.calls, budget.retries) == (50, 10)
    assert not budget.try_acquire(0.2, 3)  # 20% of 50 is 10, all used
    clock.now += 10 * WINDOW_SECONDS  # a long quiet spell: the minimum again
    assert (budget.calls, budget.retries) == (0, 0)
    assert sum(budget.try_acquire(0.2, 3) for _ in range(10)) == 3


# --- resolve: which policies wrap a call -------------------------------------------------


HTTP = HttpBackend(
    kind="http",
    url="http://127.0.0.1:1",
    timeout=2,
    retry=RetrySpec(),
    hedge=HedgeSpec(),
    coalesce=True,
)
LEGACY = LegacyBackend(kind="legacy", target="tests.executor_targets:whoami", timeout=3)


def policies_of(call: CallSpec, backend: BackendSpec) -> CallPolicies:
    """What planning resolves for a call: its backend kind's traits, then the settings."""
    traits = traits_of(backend, call)
    return resolve_policies(
        call,
        timeout=backend.timeout,
        idempotent_by_default=traits.idempotent_by_default,
        resilience=traits.resilience,
    )


@pytest.mark.parametrize(
    ("call", "backend", "retry", "hedge", "coalesce", "idempotent"),
    [
        (CallSpec(backend="x"), HTTP, True, True, True, True),
        (CallSpec(backend="x", method="head"), HTTP, True, True, True, True),
        (CallSpec(backend="x", method="OPTIONS"), HTTP, True, True, True, True),
        # never repeated unless marked: a POST could create twice
        (CallSpec(backend="x", method="POST"), HTTP, False, False, False, False),
        (CallSpec(backend="x", method="POST", idempotent=True), HTTP, True, True, True, True),
        (CallSpec(backend="x", method="GET", idempotent=False), HTTP, False, False, False, False),
        # the call's own settings win over the backend's
        (CallSpec(backend="x", coalesce=False), HTTP, True, True, False, True),
        (CallSpec(backend="x", retry=RetrySpec(attempts=1)), HTTP, False, True, True, True),
        (CallSpec(backend="x", hedge=HedgeSpec(max=0)), HTTP, True, False, True, True),
        # other kinds: only when marked idempotent, and only with the call's own settings
        (CallSpec(backend="x", method="stock"), LEGACY, False, False, False, False),
        (
            CallSpec(backend="x", method="stock", idempotent=True, retry=RetrySpec()),
            LEGACY,
            True,
            False,
            False,
            True,
        ),
    ],
)
def test_resolve_policies(
    call: CallSpec,
    backend: HttpBackend | LegacyBackend,
    retry: bool,
    hedge: bool,
    coalesce: bool,
    idempotent: bool,
) -> None:
    policies = policies_of(call, backend)
    assert (policies.retry is not None, policies.hedge is not None) == (retry, hedge)
    assert (policies.coalesce, policies.idempotent) == (coalesce, idempotent)


def test_resolved_timeout_is_the_calls_else_the_backends() -> None:
    assert policies_of(CallSpec(backend="x"), HTTP).timeout == 2
    assert policies_of(CallSpec(backend="x", timeout=0.25), HTTP).timeout == 0.25
    assert policies_of(CallSpec(backend="x", method="m"), LEGACY).timeout == 3


# --- coalesce_key: what makes two requests the same ----------------------------------------

BASE = BackendRequest(
    method="GET",
    path="/products/1",
    query=(("lang", "de"),),
    headers=(("accept-language", "de"), ("x-request-id", "a")),
)


@pytest.mark.parametrize(
    ("other", "same"),
    [
        (replace(BASE, headers=(("accept-language", "de"), ("x-request-id", "b"))), True),
        (replace(BASE, headers=(("accept-language", "de"),)), True),
        (replace(BASE, deadline=123.0), True),
        (replace(BASE, path="/products/2"), False),
        (replace(BASE, query=(("lang", "fr"),)), False),
        (replace(BASE, headers=(("accept-language", "fr"),)), False),
        (replace(BASE, method="HEAD"), False),
    ],
)
def test_coalesce_key(other: BackendRequest, same: bool) -> None:
    assert (coalesce_key(other) == coalesce_key(BASE)) is same


def test_coalesce_key_of_sql_args_and_unhashable_args() -> None:
    sql = {"sql": "SELECT $1", "params": [1, "x", None], "result": "one"}
    first = coalesce_key(BackendRequest(args=sql))
    assert first is not None and first == coalesce_key(BackendRequest(args=dict(sql)))
    assert first != coalesce_key(BackendRequest(args={**sql, "params": [2, "x", None]}))
    assert coalesce_key(BackendRequest(args={"x": {1, 2}})) is None  # a set: not shared


# --- the wrappers, over fake backends ------------------------------------------------------


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait for an observable condition, failing the test after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "the condition never came true"
        await asyncio.sleep(0.001)  # the polling interval of a condition


class Fake:
    """A backend: call n gives `answers[n]` (default OK), once `gates[n]` opens if `held`."""

    def __init__(
        self, answers: list[BackendResponse | CallError] | None = None, *, held: bool = False
    ):
        self.answers = answers or []
        self.held = held
        self.gates: list[asyncio.Event] = []
        self.cancelled: list[int] = []
        self.ended: list[int] = []

    @property
    def calls(self) -> int:
        return len(self.gates)

    def open(self, n: int | None = None) -> None:
        """Let call n answer (all calls so far, and every later one, when n is None)."""
        if n is None:
            self.held = False
        for gate in self.gates if n is None else [self.gates[n]]:
            gate.set()

    async def __call__(self, request: BackendRequest) -> BackendResponse:
        n = self.calls
        gate = asyncio.Event()
        self.gates.append(gate)
        if not self.held:
            gate.set()
        try:
            await gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(n)
            raise
        finally:
            self.ended.append(n)
        answer = self.answers[n] if n < len(self.answers) else OK
        if isinstance(answer, CallError):
            raise answer
        return answer


class Count:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> None:
        self.n += 1


def fast_retry(attempts: int = 3, min_retries: int = 3) -> RetrySpec:
    return RetrySpec(attempts=attempts, backoff=0.001, max_backoff=0.002, min_retries=min_retries)


def retrying(inner: Call, settings: RetrySpec, budget: RetryBudget | None = None) -> Call:
    budget = budget or RetryBudget("b")
    policy = retry(
        settings, budget, on_retry=Count(), on_budget_exhausted=Count(), rng=random.Random(1)
    )
    return policy(inner)


async def test_retry_repeats_retryable_failures_up_to_attempts() -> None:
    fake = Fake([BadStatus("x", status=503), UpstreamUnavailable("reset"), OK])
    assert await retrying(fake, fast_retry(attempts=3))(BackendRequest()) == OK
    assert fake.calls == 3

    fake = Fake([BadStatus("x", status=503)] * 5)
    with pytest.raises(BadStatus):
        await retrying(fake, fast_retry(attempts=3))(BackendRequest())
    assert fake.calls == 3


async def test_retry_stops_at_a_failure_it_is_not_for() -> None:
    fake = Fake([BadStatus("x", status=500)])
    with pytest.raises(BadStatus):
        await retrying(fake, fast_retry())(BackendRequest())
    assert fake.calls == 1


async def test_retry_never_waits_past_the_deadline() -> None:
    fake = Fake([BadStatus("x", status=503)])
    settings = RetrySpec(backoff=10, max_backoff=10)  # the backoff alone would pass it
    deadline = asyncio.get_running_loop().time() + 1
    with pytest.raises(BadStatus):
        await retrying(fake, settings)(BackendRequest(deadline=deadline))
    assert fake.calls == 1


async def test_retry_within_budget_only() -> None:
    exhausted = Count()
    budget = RetryBudget("b")
    for _ in range(3):
        assert budget.try_acquire(0.2, 3)  # the minimum (3) is used up
    fake = Fake([BadStatus("x", status=503)])
    policy = retry(
        fast_retry(), budget, on_retry=Count(), on_budget_exhausted=exhausted, rng=random.Random()
    )
    with pytest.raises(BadStatus):
        await policy(fake)(BackendRequest())
    assert (fake.calls, exhausted.n, budget.retries, budget.calls) == (1, 1, 3, 1)


async def test_retry_counts_each_call_once_and_each_retry_when_it_is_made() -> None:
    budget = RetryBudget("b")
    fake = Fake([BadStatus("x", status=503)] * 3)
    with pytest.raises(BadStatus):
        await retrying(fake, fast_retry(attempts=3), budget)(BackendRequest())
    assert (budget.calls, budget.retries) == (1, 2)

    fake = Fake([BadStatus("x", status=503)], held=True)
    task = asyncio.ensure_future(retrying(fake, fast_retry(), budget)(BackendRequest()))
    await until(lambda: fake.calls == 1)
    fake.open(0)  # the first try fails; the retry is held
    await until(lambda: fake.calls == 2)
    assert (budget.calls, budget.retries) == (2, 3)
    task.cancel()  # a cancelled retry was still sent: it stays counted
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (budget.calls, budget.retries) == (2, 3) and fake.cancelled == [1]


# a chain without breaker or tracing has both policies in one frame (`timed_bulkhead`)
TIMEOUTS: dict[str, Callable[[float], Policy]] = {
    "timeout": timeout,
    "timed_bulkhead": lambda seconds: timed_bulkhead(Bulkhead("b", None), seconds, Count()),
}
BULKHEADS: dict[str, Callable[[Bulkhead, Count], Policy]] = {
    "bulkhead": lambda state, rejected: bulkhead(state, on_reject=rejected),
    "timed_bulkhead": lambda state, rejected: timed_bulkhead(state, 10.0, rejected),
}


@pytest.mark.parametrize("policy", TIMEOUTS.values(), ids=TIMEOUTS.keys())
async def test_timeout_bounds_one_try(policy: Callable[[float], Policy]) -> None:
    fake = Fake(held=True)
    with pytest.raises(CallTimeout, match=r"timeout of 0.01s"):
        await policy(0.01)(fake)(BackendRequest())
    assert fake.cancelled == [0]


async def test_timed_bulkhead_frees_the_slot_of_a_try_that_timed_out() -> None:
    state = Bulkhead("b", 1)
    fake = Fake(held=True)
    call = timed_bulkhead(state, 0.01, Count())(fake)
    with pytest.raises(CallTimeout):
        await call(BackendRequest())
    assert state.in_flight == 0
    fake.open()
    assert await call(BackendRequest()) == OK


@pytest.mark.parametrize("policy", BULKHEADS.values(), ids=BULKHEADS.keys())
async def test_bulkhead_refuses_over_capacity_at_once_and_frees_slots(
    policy: Callable[[Bulkhead, Count], Policy],
) -> None:
    state = Bulkhead("b", 2)
    rejected = Count()
    fake = Fake(held=True)
    call = policy(state, rejected)(fake)
    first = asyncio.ensure_future(call(BackendRequest()))
    second = asyncio.ensure_future(call(BackendRequest()))
    await until(lambda: fake.calls == 2)
    with pytest.raises(BulkheadFull) as refused:
        await call(BackendRequest())
    assert isinstance(refused.value, Refused) and refused.value.retry_after >= 1
    assert (rejected.n, state.in_flight, fake.calls) == (1, 2, 2)
    fake.open()
    assert await first == OK and await second == OK
    assert state.in_flight == 0
    assert await call(BackendRequest()) == OK


def hedged(inner: Call, after: float = 0.01, copies: int = 1) -> tuple[Call, Count, Count]:
    sent, won = Count(), Count()
    return hedge(HedgeSpec(after=after, max=copies), on_sent=sent, on_won=won)(inner), sent, won


async def test_hedge_a_slow_first_try_copy_wins_and_the_first_is_cancelled() -> None:
    fake = Fake([BackendResponse(200, "first"), BackendResponse(200, "copy")], held=True)
    call, sent, won = hedged(fake)
    task = asyncio.ensure_future(call(BackendRequest()))
    await until(lambda: fake.calls == 2)  # no answer within `after`: a copy went out
    fake.open(1)
    assert (await task).body == "copy"
    assert fake.cancelled == [0] and (sent.n, won.n) == (1, 1)


async def test_hedge_not_sent_when_the_first_answers_in_time() -> None:
    fake = Fake([BackendResponse(200, "first")])
    call, sent, won = hedged(fake, after=60)
    assert (await call(BackendRequest())).body == "first"
    assert (fake.calls, sent.n, won.n) == (1, 0, 0)


async def test_hedge_a_failed_copy_waits_for_the_other() -> None:
    fake = Fake([BackendResponse(200, "first"), BadStatus("x", status=503)], held=True)
    call, _, won = hedged(fake)
    task = asyncio.ensure_future(call(BackendRequest()))
    await until(lambda: fake.calls == 2)
    fake.open(1)  # the copy fails first...
    await until(lambda: 1 in fake.ended)
    fake.open(0)  # ...and the first still wins
    assert (await task).body == "first" and won.n == 0


async def test_hedge_every_copy_failed_raises() -> None:
    fake = Fake([BadStatus("a", status=503), BadStatus("b", status=502)], held=True)
    call, _, _ = hedged(fake)
    task = asyncio.ensure_future(call(BackendRequest()))
    await until(lambda: fake.calls == 2)
    fake.open()
    with pytest.raises(BadStatus):
        await task


async def test_hedge_cancelled_leaves_no_copy_running() -> None:
    fake = Fake(held=True)
    call, sent, _ = hedged(fake, copies=2)
    task = asyncio.ensure_future(call(BackendRequest()))
    await until(lambda: fake.calls == 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(fake.cancelled) == [0, 1, 2] and sent.n == 2


async def test_coalesce_identical_calls_share_one_request() -> None:
    fake = Fake(held=True)
    flights: Flights = {}
    coalesced = Count()
    call = coalesce(flights, on_coalesced=coalesced)(fake)
    requests = [BackendRequest(path="/p/1", headers=(("x-request-id", str(n)),)) for n in range(10)]
    tasks = [asyncio.ensure_future(call(r)) for r in [*requests, BackendRequest(path="/p/2")]]
    await until(lambda: fake.calls == 2)
    assert coalesced.n == 9
    fake.open()
    assert all(r is OK for r in await asyncio.gather(*tasks))
    assert fake.calls == 2 and flights == {}  # nothing is remembered once answered
    assert await call(requests[0]) == OK and fake.calls == 3


async def test_coalesce_a_leaving_waiter_does_not_cancel_the_others_the_last_one_does() -> None:
    fake = Fake(held=True)
    coalesced = Count()
    call = coalesce({}, on_coalesced=coalesced)(fake)
    leaving, staying = (asyncio.ensure_future(call(BackendRequest())) for _ in range(2))
    await until(lambda: fake.calls == 1 and coalesced.n == 1)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert fake.cancelled == []
    fake.open()
    assert await staying == OK

    fake = Fake(held=True)
    call = coalesce({}, on_coalesced=Count())(fake)
    tasks = [asyncio.ensure_future(call(BackendRequest())) for _ in range(3)]
    await until(lambda: fake.calls == 1)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await until(lambda: fake.cancelled == [0])  # nobody waits: the shared request is cancelled


async def test_coalesce_shares_failures_too() -> None:
    fake = Fake([UpstreamUnavailable("reset")], held=True)
    call = coalesce({}, on_coalesced=Count())(fake)
    tasks = [asyncio.ensure_future(call(BackendRequest())) for _ in range(5)]
    await until(lambda: fake.calls == 1)
    fake.open()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert fake.calls == 1 and all(isinstance(r, UpstreamUnavailable) for r in results)


async def test_guarded_takes_an_open_host_out_of_the_rotation() -> None:
    clock = Clock()
    spec = BreakerSpec(failures=2, window=10, cooldown=5)
    good_breaker, bad_breaker = (
        Breaker("b", host, spec, lambda *_: None, clock=clock) for host in ("good", "bad")
    )
    good, bad = Fake(), Fake([UpstreamUnavailable("refused")] * 100)
    rejected = Count()
    call = guarded("b", [(good_breaker, good), (bad_breaker, bad)], on_reject=rejected)
    results = [await _outcome(call) for _ in range(10)]
    # round-robin until the bad host's second failure, then only the good host
    assert results == ["ok", "UpstreamUnavailable", "ok", "UpstreamUnavailable"] + ["ok"] * 6
    assert (good.calls, bad.calls, rejected.n) == (8, 2, 0)
    # every host open: refused at once, without a call, saying when to try again
    for _ in range(2):
        permit = good_breaker.allow()
        assert permit is not None
        good_breaker.settle(permit, False)
    clock.now += 1.5
    with pytest.raises(CircuitOpen) as refused:
        await call(BackendRequest())
    assert refused.value.retry_after == math.ceil(5 - 1.5)
    assert (good.calls, bad.calls, rejected.n) == (8, 2, 1)


async def _outcome(call: Call) -> str:
    try:
        await call(BackendRequest())
    except CallError as exc:
        return type(exc).__name__
    return "ok"


# --- the fixed order, through Resilience.wrap -----------------------------------------------


class Wrapped:
    """One backend `b` behind the app's policies, with its metrics registry."""

    def __init__(self, backend: HttpBackend, fake: Fake, call: CallSpec | None = None) -> None:
        self.registry = CollectorRegistry()
        live = LiveBackend(
            name="b", kind="http", call=fake, hosts=(("b", fake),), resilience=backend
        )
        self.resilience = Resilience({"b": live}, PolicyMetrics(self.registry), Caches(1 << 20))
        policies = policies_of(call or CallSpec(backend="b"), backend)
        self.call = self.resilience.wrap("b", policies)

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, {"backend": "b", **labels})
        return 0.0 if value is None else value


async def test_coalesced_callers_share_the_retries_below_them() -> None:
    backend = HttpBackend(
        kind="http", url="http://127.0.0.1:1", retry=fast_retry(attempts=3), coalesce=True
    )
    fake = Fake([BadStatus("x", status=503)] * 2, held=True)
    wrapped = Wrapped(backend, fake)
    tasks = [asyncio.ensure_future(wrapped.call(BackendRequest())) for _ in range(5)]
    await until(lambda: fake.calls == 1)
    fake.open()
    assert all(r is OK for r in await asyncio.gather(*tasks))
    assert fake.calls == 3  # one request and its two retries, for all five callers
    assert wrapped.metric("gateway_coalesced_requests_total") == 4
    assert wrapped.metric("gateway_retries_total") == 2


async def test_an_open_circuit_is_not_retried() -> None:
    backend = HttpBackend(
        kind="http",
        url="http://127.0.0.1:1",
        retry=fast_retry(attempts=5, min_retries=10),
        breaker=BreakerSpec(failures=2, cooldown=60),
    )
    fake = Fake([BadStatus("x", status=503)] * 10)
    wrapped = Wrapped(backend, fake)
    with pytest.raises(CircuitOpen):
        await wrapped.call(BackendRequest())
    # two tries opened the circuit; the third was refused by it, and that is not retried
    assert fake.calls == 2
    assert wrapped.metric("gateway_circuit_open_rejected_total") == 1
    assert wrapped.metric("gateway_breaker_state", host="b") == 1
    assert wrapped.metric("gateway_breaker_transitions_total", host="b", state="open") == 1


async def test_a_non_idempotent_call_is_neither_retried_nor_hedged() -> None:
    backend = HttpBackend(
        kind="http", url="http://127.0.0.1:1", retry=fast_retry(), hedge=HedgeSpec(after=0.001)
    )
    fake = Fake([BadStatus("x", status=503)], held=True)
    wrapped = Wrapped(backend, fake, CallSpec(backend="b", method="POST"))
    task = asyncio.ensure_future(wrapped.call(BackendRequest(method="POST")))
    await until(lambda: fake.calls == 1)
    fake.open()
    with pytest.raises(BadStatus):
        await task
    assert fake.calls == 1 and wrapped.metric("gateway_hedges_sent_total") == 0


async def test_the_bulkhead_counts_every_hedged_copy() -> None:
    backend = HttpBackend(
        kind="http", url="http://127.0.0.1:1", concurrency=1, hedge=HedgeSpec(after=0.001)
    )
    fake = Fake(held=True)
    wrapped = Wrapped(backend, fake)
    task = asyncio.ensure_future(wrapped.call(BackendRequest()))
    # the copy finds the bulkhead full (the first try holds the only slot): refused, not sent
    await until(lambda: wrapped.metric("gateway_bulkhead_rejected_total") == 1)
    assert wrapped.metric("gateway_hedges_sent_total") == 1 and fake.calls == 1
    fake.open()
    assert await task == OK
    assert wrapped.resilience.backends["b"].bulkhead.in_flight == 0


def test_repr_shows_state() -> None:
    breaker, _ = run_script("fail", SPEC)
    assert repr(breaker) == "<Breaker b h [closed, 1/3 failures]>"
    assert repr(Bulkhead("b", 4)) == "<Bulkhead b [0/4 in flight]>"
    assert repr(RetryBudget("b")) == "<RetryBudget b [0 retries, 0 calls in 10s]>"
