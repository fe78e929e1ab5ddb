"""Token buckets in this process: the store when there is no Redis, and the fallback when Redis
is unreachable.

A bucket holds up to `capacity` tokens (the limit's `burst`) and refills at `rate` tokens per
second; a request takes one token from each bucket it counts against. A request counted by
several limits takes from all of them or from none: one that any limit refuses consumes
nothing, so a client held back by `per_ip` does not also burn its `per_user` allowance.

At most `GATEWAY_RATE_LIMIT_MAX_KEYS` buckets are kept per limit, least recently used
dropped first: a client inventing keys (spoofed headers, many addresses) costs bounded
memory, and a dropped key only starts again with a full bucket, which is how it would look
after a pause anyway.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from gateway.config.edge import RateLimitSpec
from gateway.engine.templates import Ref, Sources, Template, parse_template, render_text
from gateway.errors import MissingValue

MAX_KEY_CHARS = 128
"""A rendered key longer than this is replaced by its SHA-256 (the bucket is the same)."""


@dataclass(frozen=True, slots=True)
class Limit:
    """One named limit of the config file, ready to take from."""

    name: str
    key: Template
    rate: float
    """Tokens added per second."""
    capacity: float
    """Most tokens a bucket holds (the burst)."""
    quota: int
    window: int
    """The limit as the RateLimit-Policy header states it: `quota` per `window` seconds."""
    _plain: Ref | None = field(init=False, repr=False, compare=False)
    """The key's one ref when the key is nothing else (`{auth.sub}`): read straight from
    its source, without the template machinery, when its value is text."""

    def __post_init__(self) -> None:
        ref = self.key.single_ref
        simple = ref is not None and not ref.field and not ref.filters and not ref.type_name
        plain = ref if simple else None
        object.__setattr__(self, "_plain", plain)

    @classmethod
    def from_spec(cls, name: str, spec: RateLimitSpec) -> Limit:
        return cls(
            name=name,
            key=parse_template(spec.key),
            rate=spec.rate.per_second,
            capacity=spec.capacity,
            quota=max(1, round(spec.rate.count)),
            window=max(1, round(spec.rate.period)),
        )

    def bucket(self, sources: Sources) -> str:
        """This request's bucket: the key rendered; every request missing a value the key
        reads shares one bucket (leaving a header out must not escape the limit)."""
        rendered: object = None
        plain = self._plain
        if plain is not None:
            source = sources.get(plain.source)
            if type(source) is dict:
                rendered = source.get(plain.key)
        if type(rendered) is not str:  # else what render_text would give, without its cost
            try:
                rendered = render_text(self.key, sources, str)
            except MissingValue:
                rendered = ""
        if len(rendered) > MAX_KEY_CHARS:
            rendered = "sha256:" + hashlib.sha256(rendered.encode()).hexdigest()
        return f"{self.name}:{rendered}"


WHOLE = 1 - 1e-9
"""A token, give or take float rounding (0.1 s at 10/s refills 0.9999999999999432)."""

Take = Sequence[tuple[Limit, str]]
"""What one request counts against: each limit with its bucket key."""


class Verdict(NamedTuple):
    """The outcome of one take: allowed or not, and each bucket's tokens after it (a
    tuple, not a frozen dataclass: one is made per request, at a fifth of the cost)."""

    allowed: bool
    tokens: tuple[float, ...]


class LocalBuckets:
    """Every limit's buckets in this process (see the module docstring)."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self._buckets: dict[str, OrderedDict[str, list[float]]] = {}

    def __repr__(self) -> str:
        held = {name: len(b) for name, b in self._buckets.items()}
        return f"<LocalBuckets {held} max {self.max_keys}>"

    def held(self, limit: str) -> int:
        """How many buckets `limit` holds now."""
        return len(self._buckets.get(limit, ()))

    def take(self, take: Take, now: float) -> Verdict:
        """One token from every bucket of `take`, or none if any lacks one; `now` in seconds
        (monotonic)."""
        if len(take) == 1:  # the common case, without the lists
            limit, key = take[0]
            state = self._refilled(limit, key, now)
            if state[0] < WHOLE:
                return Verdict(False, (state[0],))
            state[0] -= 1
            return Verdict(True, (state[0],))
        states = [self._refilled(limit, key, now) for limit, key in take]
        allowed = all(state[0] >= WHOLE for state in states)
        if allowed:
            for state in states:
                state[0] -= 1
        return Verdict(allowed, tuple([state[0] for state in states]))

    def _refilled(self, limit: Limit, key: str, now: float) -> list[float]:
        """The bucket's [tokens, at], refilled up to `now` (made full when new)."""
        buckets = self._buckets.get(limit.name)
        if buckets is None:
            buckets = self._buckets[limit.name] = OrderedDict()
        state = buckets.get(key)
        if state is None:
            state = buckets[key] = [limit.capacity, now]
            if len(buckets) > self.max_keys:
                buckets.popitem(last=False)
            return state
        buckets.move_to_end(key)
        elapsed = now - state[1]
        if elapsed > 0:
            state[0] = min(limit.capacity, state[0] + elapsed * limit.rate)
            state[1] = now
        return state
