"""Leases: tokens of shared buckets this process took from Redis ahead of its requests.

With `cluster.redis` every take was a Redis round trip. A lease saves most of them (Kong's
`sync_rate`, Envoy's local limit in front of the global one, in spirit): when a request finds
no tokens of its bucket here, its script call takes a batch of them at once (atomically, in
the same script that decides the request) and the requests after it spend the rest here,
without asking Redis. The sum across processes still never exceeds the limit, since every
token spent here was taken from the shared bucket first; what a lease costs is precision:

* a lease lives `cluster.lease` seconds (default 100 ms); the tokens it still holds then are
  lost, never handed back, so a process that asked for more than it spends lets through a
  little less than the limit, never more;
* near the limit, a process holding a lease may serve requests while another, finding the
  bucket empty in Redis, refuses them: the share between processes is uneven for a lease's
  lifetime, the sum is not.

A lease is sized from this process's own pace for that bucket (what it spent of the last
lease, and how fast: `next_size`), so a bucket whose requests are spread over many processes
asks each for its share, not for the whole rate; it is at most `cap` tokens: what the limit
refills in a lease's lifetime and a tenth of its burst (`LEASE_SHARE`), at least 1. A limit
whose cap is 1 (10/s with 100 ms leases) never holds a lease: each take is a round trip, as
without leases, and keeps exact counts. The first take of a bucket asks for one token: a
client that sends one request costs no more than before.

At most `max_keys` buckets hold a lease state in the process (GATEWAY_RATE_LIMIT_MAX_KEYS),
the least recently granted forgotten first (its tokens lost).

Pure bookkeeping, no I/O: gateway/web/ratelimit/shared.py asks, sends and settles.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.web.ratelimit.buckets import Limit, Take, Verdict

LEASE_SHARE = 0.1
"""A lease holds at most this share of a bucket's burst, so one process cannot hold most of
it while others find it empty."""


def lease_cap(limit: Limit, seconds: float) -> int:
    """The most tokens a lease of `limit` holds: what it refills in `seconds` (the lease's
    lifetime), at most `LEASE_SHARE` of its burst, at least 1 (1: no leases at all)."""
    refilled = math.floor(limit.rate * seconds)
    return max(1, min(refilled, math.floor(limit.capacity * LEASE_SHARE)))


SPEND_WITHIN = 0.5
"""A lease is sized to be spent in this share of its lifetime at the pace the last one was:
a pace that halves until the next lease wastes nothing of it."""


def next_size(granted: int, left: int, span: float, seconds: float, cap: int) -> int:
    """The next lease to ask for, after one of `granted` tokens (the asking request's own
    included) of which `left` went unspent, over `span` seconds: what this process spends
    at that pace in `SPEND_WITHIN` of a lease's lifetime of `seconds`, within 1..`cap`.

    `span` is the lease's age when the next ask came (it was spent by then), or its whole
    lifetime when it expired first; 0 (spent at once) asks for the cap."""
    used = granted - left
    if used <= 0:
        return 1
    if span <= 0:
        return cap
    return max(1, min(cap, math.ceil(used * seconds * SPEND_WITHIN / span)))


@dataclass(slots=True, eq=False)
class Lease:
    """One bucket's lease in this process, and what sizes the next one."""

    tokens: int
    """Left to spend here."""
    granted: int
    """Taken from Redis with it, the asking request's own token included."""
    at: float
    """When it was granted (monotonic seconds)."""
    until: float
    """When its unspent tokens are lost."""
    shared: float
    """The bucket's tokens left in Redis at the grant: with `tokens`, what the RateLimit
    header reports while requests are served from the lease."""
    asking: bool = False
    """A take asking for the next lease is on its way to Redis: others ask for one token."""


Ask = tuple[tuple[int, Lease | None], ...]
"""What one take asks Redis for, per bucket: the tokens, and the lease concerned: with 0
tokens, the lease its token was reserved from; with more, the lease the answer refills;
None: one token, no lease."""


class Leases:
    """Every bucket's lease in this process (see the module docstring)."""

    def __init__(self, seconds: float, max_keys: int) -> None:
        self.seconds = seconds
        self.max_keys = max_keys
        self._held: OrderedDict[str, Lease] = OrderedDict()
        self._caps: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._held)

    def __repr__(self) -> str:
        tokens = sum(lease.tokens for lease in self._held.values())
        return f"<Leases {len(self._held)} buckets, {tokens} tokens, {self.seconds:g}s>"

    def get(self, key: str) -> Lease | None:
        return self._held.get(key)

    def cap(self, limit: Limit) -> int:
        found = self._caps.get(limit.name)
        if found is None:
            found = self._caps[limit.name] = lease_cap(limit, self.seconds)
        return found

    def spend(self, take: Take, now: float) -> Verdict | None:
        """A token of every bucket of `take` from its lease, when each holds a live one;
        else None (and nothing is spent)."""
        held = self._held
        if len(take) == 1:  # the common case, without the lists
            limit, key = take[0]
            lease = held.get(key)
            if lease is None or lease.tokens < 1 or now >= lease.until:
                return None
            lease.tokens -= 1
            return Verdict(True, (min(limit.capacity, lease.shared + lease.tokens),))
        leases = [held.get(key) for _, key in take]
        live = [x for x in leases if x is not None and x.tokens >= 1 and now < x.until]
        if len(live) < len(take):
            return None
        for lease in live:
            lease.tokens -= 1
        return Verdict(
            True,
            tuple(
                [
                    min(limit.capacity, lease.shared + lease.tokens)
                    for (limit, _), lease in zip(take, live, strict=True)
                ]
            ),
        )

    def ask(self, take: Take, now: float) -> Ask:
        """What to ask Redis for, for a take that `spend` could not serve: a bucket with a
        live lease gives its token now (reserved: given back if the take is refused); one
        without asks for the next lease, or for one token while another take asks for it."""
        asks: list[tuple[int, Lease | None]] = []
        for limit, key in take:
            cap = self.cap(limit)
            lease = self._held.get(key)
            if cap == 1:
                asks.append((1, None))
            elif lease is not None and lease.tokens >= 1 and now < lease.until:
                lease.tokens -= 1
                asks.append((0, lease))
            elif lease is not None and lease.asking:
                asks.append((1, None))
            else:
                if lease is None:  # the first take of the bucket asks for one token
                    lease = self._held[key] = Lease(0, 0, now, now, limit.capacity)
                    self._bound()
                    size = 1
                else:
                    span = min(now, lease.until) - lease.at
                    size = next_size(lease.granted, lease.tokens, span, self.seconds, cap)
                lease.asking = True
                asks.append((size, lease))
        return tuple(asks)

    def settle(
        self,
        take: Take,
        ask: Ask,
        allowed: bool,
        shared: Sequence[float],
        granted: Sequence[int],
        now: float,
    ) -> Verdict:
        """Redis's answer to `ask`: whether the take is allowed, each bucket's tokens left
        there and the tokens it granted. Refills the leases asked for, gives reserved tokens
        back when refused, and gives the take's verdict (each bucket's tokens, a lease's
        included)."""
        tokens: list[float] = []
        for (limit, key), (want, lease), left, got in zip(take, ask, shared, granted, strict=True):
            if lease is None:  # one token, no lease
                tokens.append(left)
            elif want == 0:  # reserved from a lease here: Redis only said what it holds
                if not allowed:
                    lease.tokens += 1
                tokens.append(min(limit.capacity, lease.shared + lease.tokens))
            else:
                lease.asking = False
                if not allowed or got < 1:
                    tokens.append(left)  # what is left of an old lease is not spendable
                    continue
                unspent = lease.tokens if now < lease.until else 0
                lease.tokens = unspent + got - 1
                lease.granted = unspent + got
                lease.at, lease.until, lease.shared = now, now + self.seconds, left
                if self._held.get(key) is lease:
                    self._held.move_to_end(key)
                tokens.append(min(limit.capacity, left + lease.tokens))
        return Verdict(allowed, tuple(tokens))

    def abandon(self, ask: Ask) -> None:
        """`ask` will not be sent (decided in the process instead): reserved tokens go back
        to their leases, and the next take may ask for a lease again."""
        for want, lease in ask:
            if lease is None:
                continue
            if want == 0:
                lease.tokens += 1
            else:
                lease.asking = False

    def clear(self) -> None:
        """Forget every lease (Redis lost: the process limits alone until it is back)."""
        self._held.clear()

    def _bound(self) -> None:
        while len(self._held) > self.max_keys:
            self._held.popitem(last=False)
