"""Leases of shared rate-limit tokens (gateway/web/ratelimit/leases.py): their size, their
accounting, and, against a model of the Redis script's bucket, that processes spending
leases never let more through than the limit. Pure: no Redis, no processes (the real-Redis
test is tests/test_rate_limits.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from gateway.config.edge import RateLimitSpec
from gateway.web.ratelimit.buckets import WHOLE, Limit, Verdict
from gateway.web.ratelimit.leases import Ask, Leases, lease_cap, next_size


def limit(rate: str, burst: int | None = None, name: str = "l") -> Limit:
    return Limit.from_spec(name, RateLimitSpec(key="{client.ip}", rate=rate, burst=burst))


@pytest.mark.parametrize(
    ("rate", "burst", "seconds", "cap"),
    [
        ("10/s", 2, 0.05, 1),  # the 10/s tests: no leases, every take a round trip
        ("10/s", None, 1.0, 1),  # a tenth of a burst of 10
        ("100/m", 20, 0.05, 1),
        ("2000/s", None, 0.05, 100),  # what it refills in 50 ms
        ("2000/s", 50, 0.05, 5),  # a tenth of the burst
        ("1000000/s", None, 0.05, 50000),
        ("300/s", 300, 0.2, 30),
        ("2000/s", None, 0.0, 1),  # `lease: 0`: leases off
    ],
)
def test_a_lease_is_what_the_limit_refills_in_its_lifetime_within_a_tenth_of_its_burst(
    rate: str, burst: int | None, seconds: float, cap: int
) -> None:
    assert lease_cap(limit(rate, burst), seconds) == cap


@pytest.mark.parametrize(
    ("granted", "left", "span", "size"),
    [
        (10, 0, 0.025, 10),  # spent in half the lifetime: the same again
        (10, 0, 0.005, 50),  # five times faster: five times more
        (1, 0, 0.01, 3),  # a first token, the next request 10 ms later
        (10, 0, 0.0, 100),  # spent at once: the cap
        (1000, 0, 0.001, 100),  # never past the cap
        (10, 6, 0.05, 2),  # expired with 6 unspent: half of the 4 spent
        (10, 10, 0.05, 1),  # nothing spent: one token, as without leases
        (0, 0, 0.05, 1),  # a first take: one token
    ],
)
def test_the_next_lease_follows_the_pace_the_last_one_was_spent_at(
    granted: int, left: int, span: float, size: int
) -> None:
    assert next_size(granted, left, span, seconds=0.05, cap=100) == size


def test_a_limit_whose_lease_would_be_one_token_keeps_no_lease() -> None:
    leases, ten = Leases(0.05, max_keys=10), limit("10/s", burst=2)
    take = [(ten, "k")]
    ask = leases.ask(take, now=0.0)
    assert ask == ((1, None),)
    assert leases.settle(take, ask, True, [1.0], [1], now=0.0) == Verdict(True, (1.0,))
    assert leases.spend(take, now=0.0) is None and len(leases) == 0


def test_a_lease_is_asked_for_spent_here_and_lost_when_it_expires() -> None:
    leases, wide = Leases(0.05, max_keys=10), limit("2000/s")
    take = [(wide, "k")]
    first = leases.ask(take, now=0.0)
    assert [want for want, _ in first] == [1], "a first take asks for its own token only"
    assert leases.settle(take, first, True, [1999.0], [1], now=0.0).allowed
    assert leases.spend(take, now=0.01) is None, "nothing leased yet"
    second = leases.ask(take, now=0.01)
    assert [want for want, _ in second] == [3], "one token in 10 ms: 3 in 25 ms"
    assert [want for want, _ in leases.ask(take, now=0.01)] == [1], "asked already: one token"
    verdict = leases.settle(take, second, True, [1996.0], [3], now=0.011)
    assert verdict == Verdict(True, (1998.0,)), "Redis's tokens and the lease's two"
    assert leases.spend(take, now=0.02) == Verdict(True, (1997.0,))
    assert leases.spend(take, now=0.03) == Verdict(True, (1996.0,))
    assert leases.spend(take, now=0.03) is None, "spent"
    third = leases.ask(take, now=0.04)
    leases.settle(take, third, True, [1990.0], [third[0][0]], now=0.04)
    lease = leases.get("k")
    assert lease is not None and lease.tokens == third[0][0] - 1
    assert leases.spend(take, now=0.04 + 0.05) is None, "expired: its tokens are lost"
    fourth = leases.ask(take, now=0.2)
    assert [want for want, _ in fourth] == [math.ceil(1 / 2)], "one spent of it: half that"


def test_redis_near_empty_grants_fewer_and_a_refusal_refills_nothing() -> None:
    leases, wide = Leases(0.05, max_keys=10), limit("2000/s")
    take = [(wide, "k")]
    leases.settle(take, leases.ask(take, now=0.0), True, [5.0], [1], now=0.0)
    ask = leases.ask(take, now=0.0)
    assert [want for want, _ in ask] == [100], "the last one spent at once: the cap"
    verdict = leases.settle(take, ask, True, [0.4], [3], now=0.0)
    assert verdict == Verdict(True, (2.4,)), "Redis had 3.4: 3 granted, 2 of them leased"
    held = leases.get("k")
    assert held is not None and held.tokens == 2
    assert leases.spend(take, now=0.001) and leases.spend(take, now=0.001)
    refused = leases.ask(take, now=0.002)
    verdict = leases.settle(take, refused, False, [0.2], [0], now=0.002)
    assert verdict == Verdict(False, (0.2,)) and held.tokens == 0 and not held.asking


def test_a_take_refused_by_one_limit_gives_the_other_lease_its_token_back() -> None:
    leases, wide, narrow = Leases(0.05, max_keys=10), limit("2000/s", name="w"), limit("10/s")
    leases.settle([(wide, "w")], leases.ask([(wide, "w")], now=0.0), True, [1000.0], [1], 0.0)
    grow = leases.ask([(wide, "w")], now=0.001)
    leases.settle([(wide, "w")], grow, True, [990.0], [10], now=0.001)
    held = leases.get("w")
    assert held is not None and held.tokens == 9
    take = [(wide, "w"), (narrow, "n")]
    assert leases.spend(take, now=0.002) is None, "the narrow limit has no lease"
    ask = leases.ask(take, now=0.002)
    assert ask == ((0, held), (1, None)) and held.tokens == 8, "reserved"
    verdict = leases.settle(take, ask, False, [990.0, 0.5], [0, 0], now=0.003)
    assert not verdict.allowed and held.tokens == 9, "given back"
    assert [t < WHOLE for t in verdict.tokens] == [False, True], "the narrow one refused"
    ask = leases.ask(take, now=0.004)
    assert leases.settle(take, ask, True, [990.0, 0.2], [0, 1], now=0.004).allowed
    assert held.tokens == 8
    ask = leases.ask(take, now=0.005)
    leases.abandon(ask)  # decided in the process instead (Redis busy or down)
    assert held.tokens == 8


def test_leases_are_bounded_and_forgotten_when_redis_is_lost() -> None:
    leases, wide = Leases(0.05, max_keys=3), limit("2000/s")
    for key in "abcde":
        leases.settle([(wide, key)], leases.ask([(wide, key)], now=0.0), True, [1.0], [1], 0.0)
    assert len(leases) == 3 and leases.get("a") is None and leases.get("e") is not None
    leases.clear()
    assert len(leases) == 0


@dataclass
class ModelBucket:
    """One shared bucket as the Redis script keeps it (refill, all or none, grant)."""

    rate: float
    capacity: float
    held: float | None = None
    at: float = 0.0

    def take(self, want: int, now: float) -> tuple[bool, float, int]:
        if self.held is None:  # a new key: full
            self.held = self.capacity
        else:
            self.held = min(self.capacity, self.held + max(0.0, now - self.at) * self.rate)
        self.at = now
        if self.held < WHOLE:
            return False, self.held, 0
        granted = max(1, min(want, math.floor(self.held + 1e-9)))
        self.held -= granted
        return True, self.held, granted


@pytest.mark.parametrize(
    ("rate", "burst", "seconds", "paces"),
    [
        ("2000/s", None, 0.05, (3000, 3000)),  # both well past the limit
        ("2000/s", 200, 0.05, (1500, 300)),  # one busy process, one quiet
        ("2000/s", None, 0.05, (900, 900)),  # together just under the limit
        ("300/s", 300, 0.2, (1000, 1000, 1000)),  # three processes, long leases
        ("1000/s", 100, 0.05, (250, 250, 250, 250, 250, 250)),  # six at a sixth each
    ],
)
def test_processes_spending_leases_never_pass_the_limit_and_waste_little(
    rate: str, burst: int | None, seconds: float, paces: tuple[int, ...]
) -> None:
    """Each process asks at its own pace (evenly spaced requests, one round trip of 1 ms);
    over 3 s the sum of what they let through never passes burst + rate x time, and when
    they ask for more than the limit it falls short of it by less than 10% of rate x time."""
    shared = limit(rate, burst)
    bucket = ModelBucket(shared.rate, shared.capacity)
    processes = [Leases(seconds, max_keys=10) for _ in paces]
    take = [(shared, "k")]
    waiting: list[tuple[float, int, Ask]] = []  # answers due: when, to which process
    allowed, duration, step = 0, 3.0, 0.0001
    due = [0.0] * len(paces)
    for tick in range(int(duration / step)):
        now = tick * step
        while waiting and waiting[0][0] <= now:
            _, index, ask = waiting.pop(0)
            ok, left, granted = bucket.take(ask[0][0], now - 0.0005)  # Redis's moment: mid-way
            allowed += processes[index].settle(take, ask, ok, [left], [granted], now).allowed
        for index, pace in enumerate(paces):
            if now < due[index]:
                continue
            due[index] += 1 / pace
            if processes[index].spend(take, now) is not None:
                allowed += 1
            else:
                waiting.append((now + 0.001, index, processes[index].ask(take, now)))
    ceiling = shared.capacity + shared.rate * duration
    assert allowed <= ceiling, (allowed, ceiling)
    wanted = min(ceiling, sum(paces) * duration)
    assert allowed >= wanted - 0.1 * shared.rate * duration, (allowed, wanted)
