"""Cache policy: answers of idempotent calls kept for their time to live, and served stale
(within `stale`) while one background refresh per key brings a fresh one.

The key is the rendered backend request (method, path, query, headers except the request id,
args) plus the identity of the authenticated client (`BackendRequest.identity`) unless the
cache is `shared`: one user's cached answer never reaches another user. The upstream decides
what may be kept: `Cache-Control: no-store` or `private` is never cached, `max-age`/`Expires`
give the time to live unless the config's `ttl` overrides them; without either, an answer is
kept only when `ttl` is set.

Memory is bounded twice: each cache holds at most `max_entries` (least recently used first
out), and every cache of the process together at most `GATEWAY_CACHE_MAX_BYTES` of answers
(the largest cache gives back its least recently used entries first). An answer is measured
by its JSON encoding, which is what it costs to keep.

It sits outermost in the chain: a hit touches nothing below, and misses of one key at the
same time share one upstream call through coalescing below it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, replace

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from gateway.errors import CallError
from gateway.policies.coalesce import coalesce_key
from gateway.types import BackendRequest, BackendResponse, Call

log = logging.getLogger("gateway.cache")


@dataclass(slots=True)
class Entry:
    """One kept answer: fresh until `fresh_until`, servable stale until `stale_until`."""

    response: BackendResponse
    size: int
    fresh_until: float
    stale_until: float
    refreshing: bool = False


@dataclass(slots=True)
class CacheCounters:
    """What /metrics reads of one cache."""

    hits: int = 0
    misses: int = 0
    stale: int = 0
    evictions: int = 0
    bytes: int = 0
    entries: int = 0
    errors: int = 0
    """Reads and writes of a shared (Redis) cache that failed: the calls went upstream."""


class Caches:
    """Every cache of one app and their shared byte budget."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.caches: dict[str, CallCache] = {}
        self.total = 0
        self.refreshes: set[asyncio.Task[None]] = set()
        self.redis: Redis | None = None
        """The cluster's Redis, for caches with `store: redis` (None: every cache is local)."""

    def __repr__(self) -> str:
        return f"<Caches [{len(self.caches)} caches, {self.total}/{self.max_bytes} bytes]>"

    def cache(self, name: str, max_entries: int) -> CallCache:
        """The cache called `name` (a backend, or a backend's call), made on first use."""
        found = self.caches.get(name)
        if found is None:
            found = self.caches[name] = CallCache(name, max_entries, self)
        return found

    def shrink(self) -> None:
        """Evict until the caches together fit the byte budget."""
        while self.total > self.max_bytes:
            largest = max(self.caches.values(), key=lambda c: c.counters.bytes)
            if not largest.evict_oldest():
                return

    def forget(self, backends: set[str]) -> None:
        """Drop the caches of these backends (a reload changed or removed them): what they
        kept came from a backend that is no longer the configured one."""
        for name in list(self.caches):
            if name.split(" ", 1)[0] in backends:
                cache = self.caches.pop(name)
                self.total -= cache.counters.bytes

    async def close_redis(self) -> None:
        """Close the cluster's Redis client, if there is one (shutdown)."""
        if self.redis is not None:
            await self.redis.aclose()

    async def aclose(self) -> None:
        """Cancel background refreshes (on shutdown): their callers are long gone."""
        for task in list(self.refreshes):
            task.cancel()
        if self.refreshes:
            await asyncio.gather(*self.refreshes, return_exceptions=True)


class CallCache:
    """The entries of one cache, least recently used first."""

    def __init__(self, name: str, max_entries: int, owner: Caches) -> None:
        self.name = name
        self.max_entries = max_entries
        self.owner = owner
        self.entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self.counters = CacheCounters()

    def __repr__(self) -> str:
        c = self.counters
        return f"<CallCache {self.name} [{c.entries}/{self.max_entries}, {c.bytes} bytes]>"

    def get(self, key: Hashable) -> Entry | None:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key: Hashable, entry: Entry) -> None:
        self.drop(key)
        self.entries[key] = entry
        self.counters.bytes += entry.size
        self.counters.entries += 1
        self.owner.total += entry.size
        while len(self.entries) > self.max_entries:
            self.evict_oldest()
        self.owner.shrink()

    def drop(self, key: Hashable) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.counters.bytes -= entry.size
            self.counters.entries -= 1
            self.owner.total -= entry.size

    def evict_oldest(self) -> bool:
        if not self.entries:
            return False
        key = next(iter(self.entries))
        self.drop(key)
        self.counters.evictions += 1
        return True


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """The resolved settings of one call's cache (see gateway/config/models.CacheSpec)."""

    name: str
    ttl: float | None
    stale: float
    max_entries: int
    shared: bool = False
    store: str = "memory"
    """`memory` (this process) or `redis` (every process, gateway/policies/shared_cache.py)."""


def cache_key(request: BackendRequest, shared: bool) -> Hashable | None:
    """The coalescing key (the rendered request) plus the identity unless `shared`."""
    key = coalesce_key(request)
    if key is None:
        return None
    return key if shared else (key, request.identity)


def lifetime(policy: CachePolicy, response: BackendResponse) -> float | None:
    """How long an answer stays fresh: the config's `ttl`, else the upstream's (`max-age=0`
    is stale at once, still servable within `stale`); None: not kept (no-store, private,
    nobody said how long, or nothing to keep it for)."""
    if not response.cacheable:
        return None
    ttl = policy.ttl if policy.ttl is not None else response.max_age
    if ttl is None or ttl + policy.stale <= 0:
        return None
    return ttl


def size_of(response: BackendResponse) -> int:
    """The bytes an answer costs to keep: its JSON encoding, plus a small overhead."""
    return len(orjson.dumps(response.body)) + 64


class CachedCall:
    """A call behind an in-process cache: a `Call` (a miss goes through and is kept), plus
    `peek`, the cached answer without waiting for anything (the engine settles such a call
    before it starts any task: gateway/engine/execute.py)."""

    __slots__ = ("caches", "inner", "policy", "store")

    def __init__(self, inner: Call, policy: CachePolicy, caches: Caches) -> None:
        self.inner = inner
        self.policy = policy
        self.caches = caches
        self.store = caches.cache(policy.name, policy.max_entries)

    def __repr__(self) -> str:
        return f"<CachedCall {self.store!r}>"

    async def __call__(self, request: BackendRequest) -> BackendResponse:
        key = cache_key(request, self.policy.shared)
        if key is None:
            return await self.inner(request)
        found = self._served(key, request)
        if found is not None:
            return found
        self.store.counters.misses += 1
        return await self._fetch(key, request)

    def peek(self, request: BackendRequest) -> BackendResponse | None:
        """The answer this call would give from the cache now (fresh, or stale while one
        refresh runs in the background), or None: the call has to go upstream."""
        key = cache_key(request, self.policy.shared)
        return None if key is None else self._served(key, request)

    def _served(self, key: Hashable, request: BackendRequest) -> BackendResponse | None:
        store = self.store
        entry = store.get(key)
        if entry is None:
            return None
        now = self.caches.clock()
        if now < entry.fresh_until:
            store.counters.hits += 1
            return entry.response
        if now < entry.stale_until:
            store.counters.stale += 1
            if not entry.refreshing:
                entry.refreshing = True
                caches = self.caches
                task = asyncio.get_running_loop().create_task(
                    self._refresh(key, request, entry), name=f"cache-refresh:{self.policy.name}"
                )
                caches.refreshes.add(task)
                task.add_done_callback(caches.refreshes.discard)
            return entry.response
        return None

    async def _fetch(self, key: Hashable, request: BackendRequest) -> BackendResponse:
        response = await self.inner(request)
        ttl = lifetime(self.policy, response)
        if ttl is not None:
            now = self.caches.clock()
            fresh, stale = now + ttl, now + ttl + self.policy.stale
            self.store.put(key, Entry(response, size_of(response), fresh, stale))
        else:
            self.store.drop(key)
        return response

    async def _refresh(self, key: Hashable, request: BackendRequest, entry: Entry) -> None:
        try:
            # the refresh outlives the request that saw the stale entry: no deadline
            await self._fetch(key, replace(request, deadline=None))
        except CallError as exc:
            log.info("cache %s: background refresh failed: %s", self.policy.name, exc)
        finally:
            entry.refreshing = False


def cached(policy: CachePolicy, caches: Caches) -> Callable[[Call], CachedCall]:
    """Serve fresh answers from the cache, stale ones while refreshing once in the
    background, and call through (and keep the answer) on a miss."""

    def policy_for(inner: Call) -> CachedCall:
        return CachedCall(inner, policy, caches)

    return policy_for


class CacheCollector(Collector):
    """/metrics for every cache of an app, read from their counters at scrape time (no
    per-request cost)."""

    def __init__(self, caches: Caches) -> None:
        self.caches = caches

    def collect(self) -> Iterator[Metric]:
        labels = ["cache"]
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "hits": CounterMetricFamily(
                "gateway_cache_hits", "Calls answered from the cache.", labels=labels
            ),
            "misses": CounterMetricFamily(
                "gateway_cache_misses", "Cacheable calls that went upstream.", labels=labels
            ),
            "stale": CounterMetricFamily(
                "gateway_cache_stale_served",
                "Calls answered stale while a background refresh ran.",
                labels=labels,
            ),
            "evictions": CounterMetricFamily(
                "gateway_cache_evictions",
                "Entries evicted to stay within max_entries or the byte budget.",
                labels=labels,
            ),
            "bytes": GaugeMetricFamily(
                "gateway_cache_bytes", "Bytes of answers kept.", labels=labels
            ),
            "entries": GaugeMetricFamily(
                "gateway_cache_entries", "Answers kept (in this process).", labels=labels
            ),
            "errors": CounterMetricFamily(
                "gateway_cache_errors",
                "Reads and writes of a Redis cache that failed (the calls went upstream).",
                labels=labels,
            ),
        }
        for name, cache in list(self.caches.caches.items()):
            for field_name, family in families.items():
                family.add_metric([name], getattr(cache.counters, field_name))
        yield from families.values()
