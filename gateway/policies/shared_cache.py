"""`cache: {store: redis}`: a call cache kept in the cluster's Redis (`cluster.redis`), so
every gateway process and replica serves what any of them fetched.

The rules are the cache policy's (gateway/policies/cache.py): the same key (the rendered
request plus the identity unless `shared`), the same lifetimes and the same stale window,
kept in Redis with the whole of it (fresh + stale) as the key's TTL, so Redis forgets an
entry on its own. Values are compressed JSON (zlib, level 1: answers are JSON, which
compresses several times, and level 1 costs little CPU on the hot path). Times are wall-clock
times, since processes share them. One refresh per key across replicas: the process that
wins a short `SET NX` lock refreshes; the others serve the stale answer meanwhile.

Redis is a cache here, never a dependency: a Redis that fails or is slow (bounded by the
client's timeouts) makes the call a miss that goes upstream, logged once per failure streak
and counted in `gateway_cache_errors_total`; no request fails because of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import zlib
from collections.abc import Hashable
from dataclasses import replace

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import CallError
from gateway.policies.cache import CachePolicy, Caches, cache_key, lifetime
from gateway.types import BackendRequest, BackendResponse, Call, Policy

log = logging.getLogger("gateway.cache")

PREFIX = "fanout:cache:"
REFRESH_LOCK_SECONDS = 10
"""How long one replica holds the right to refresh a stale key (its refresh is bounded by
the call's own timeout, well below this)."""
FAILURES = (RedisError, OSError, TimeoutError)


def redis_key(name: str, key: Hashable) -> str:
    """The Redis key of an entry: the cache's name and a digest of the rendered request (the
    key is built of strings, numbers and tuples, so its repr is the same in every process)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=20).hexdigest()
    return f"{PREFIX}{name}:{digest}"


# Caches with `store: redis` and no `cluster.redis` (or REDIS_URL unset) are kept in process
# memory like any other: gateway/policies/chain.py picks the store when it wraps the call.


def encode(response: BackendResponse, fresh_until: float, stale_until: float) -> bytes:
    header = orjson.dumps({"s": response.status, "f": fresh_until, "t": stale_until})
    return zlib.compress(header + b"\n" + orjson.dumps(response.body), 1)


def decode(data: bytes) -> tuple[BackendResponse, float, float]:
    header, _, body = zlib.decompress(data).partition(b"\n")
    meta = orjson.loads(header)
    return BackendResponse(meta["s"], orjson.loads(body)), meta["f"], meta["t"]


def shared_cached(policy: CachePolicy, caches: Caches, client: Redis) -> Policy:
    """The cache policy with its entries in Redis (see the module docstring)."""
    counters = caches.cache(policy.name, policy.max_entries).counters
    failing = False

    def failed(doing: str, exc: BaseException) -> None:
        nonlocal failing
        counters.errors += 1
        if not failing:
            failing = True
            log.warning("cache %s: Redis %s failed (%s); going upstream", policy.name, doing, exc)

    def policy_for(inner: Call) -> Call:
        async def fetch(rkey: str, request: BackendRequest) -> BackendResponse:
            nonlocal failing
            response = await inner(request)
            ttl = lifetime(policy, response)
            if ttl is not None:
                now = time.time()
                data = encode(response, now + ttl, now + ttl + policy.stale)
                try:
                    await client.set(rkey, data, px=max(1, int((ttl + policy.stale) * 1000)))
                    failing = False
                except FAILURES as exc:
                    failed("write", exc)
            return response

        async def refresh(rkey: str, request: BackendRequest) -> None:
            try:
                await fetch(rkey, replace(request, deadline=None))
            except CallError as exc:
                log.info("cache %s: background refresh failed: %s", policy.name, exc)

        async def call(request: BackendRequest) -> BackendResponse:
            nonlocal failing
            key = cache_key(request, policy.shared)
            if key is None:
                return await inner(request)
            rkey = redis_key(policy.name, key)
            try:
                data = await client.get(rkey)
                failing = False
            except FAILURES as exc:
                failed("read", exc)
                counters.misses += 1
                return await inner(request)
            if isinstance(data, bytes):
                response, fresh_until, stale_until = decode(data)
                now = time.time()
                if now < fresh_until:
                    counters.hits += 1
                    return response
                if now < stale_until:
                    counters.stale += 1
                    try:
                        won = await client.set(
                            f"{rkey}:refresh", b"1", nx=True, ex=REFRESH_LOCK_SECONDS
                        )
                    except FAILURES as exc:
                        failed("lock", exc)
                        won = False
                    if won:
                        task = asyncio.get_running_loop().create_task(
                            refresh(rkey, request), name=f"cache-refresh:{policy.name}"
                        )
                        caches.refreshes.add(task)
                        task.add_done_callback(caches.refreshes.discard)
                    return response
            counters.misses += 1
            return await fetch(rkey, request)

        return call

    return policy_for
