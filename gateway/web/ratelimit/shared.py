"""Token buckets shared by every gateway process and replica, in one Redis.

Each take is decided by an atomic Lua script (EVALSHA): it refills every bucket of the
request from Redis's own clock (`TIME`, so the replicas' clocks do not matter), takes a
token from all or from none (as the local buckets do), writes them back and sets them to
expire once full again, so idle keys cost Redis nothing. The takes of one event-loop turn
share one script call (in order, each atomic as a whole), so a busy process makes one round
trip for many requests rather than one each. A take may ask for more than its own token: a
lease that the requests after it spend in this process without asking Redis
(gateway/web/ratelimit/leases.py, `cluster.lease`); a take its leases can serve is decided
at once (`decide`), and only the others go to Redis.

Redis must never fail a request. Every connect and take is bounded by
`GATEWAY_REDIS_TIMEOUT_SECONDS`; when one fails the gateway falls back to this process's own
buckets (gateway/web/ratelimit/buckets.py), says so once in the log, sets
`gateway_rate_limit_fallback` to 1 and reports it in /readyz (without turning unready: the
gateway still serves), then tries Redis again every `GATEWAY_REDIS_RETRY_SECONDS` in the
background and goes back to the shared buckets when it answers. While falling back, each
process applies the limits by itself, so N processes let through up to N times the limit.
A take that finds all `GATEWAY_REDIS_MAX_CONNECTIONS` connections busy for longer than the
timeout is decided locally too (`gateway_rate_limit_local_takes{reason="busy"}`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.web.guard_metrics import GuardMetrics
from gateway.web.ratelimit.buckets import LocalBuckets, Take, Verdict
from gateway.web.ratelimit.leases import Ask, Leases

log = logging.getLogger("gateway.ratelimit")

KEY_PREFIX = "fanout:rl:"
MAX_BATCH = 256
"""Takes sent in one script call at most."""

# One call decides a batch of takes, in order. KEYS: every take's buckets, one after the
# other; ARGV: for each take, its number of buckets n, then n triples (rate, capacity, want):
# `want` tokens asked for (its own and a lease's: at most as many as the bucket holds), or 0
# for a bucket whose token the process holds already (only reported, not required).
# Returns, for each take, allowed (1/0) and then, for each of its buckets, the tokens left
# (a string: Lua numbers would be truncated to integers in the reply) and the tokens granted.
TAKE = """
redis.replicate_commands()
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local reply = {}
local key = 0
local arg = 1
while arg <= #ARGV do
  local n = tonumber(ARGV[arg])
  local tokens = {}
  local allowed = 1
  for i = 1, n do
    local rate = tonumber(ARGV[arg + 3 * i - 2])
    local capacity = tonumber(ARGV[arg + 3 * i - 1])
    local want = tonumber(ARGV[arg + 3 * i])
    local state = redis.call('HMGET', KEYS[key + i], 't', 'at')
    local held = tonumber(state[1])
    local at = tonumber(state[2])
    if held == nil or at == nil then
      held = capacity
    else
      held = math.min(capacity, held + math.max(0, now - at) * rate)
    end
    tokens[i] = held
    if want > 0 and held < 1 - 1e-9 then allowed = 0 end
  end
  reply[#reply + 1] = allowed
  for i = 1, n do
    local rate = tonumber(ARGV[arg + 3 * i - 2])
    local capacity = tonumber(ARGV[arg + 3 * i - 1])
    local want = tonumber(ARGV[arg + 3 * i])
    local granted = 0
    if want > 0 then
      if allowed == 1 then
        granted = math.max(1, math.min(want, math.floor(tokens[i] + 1e-9)))
        tokens[i] = tokens[i] - granted
      end
      redis.call('HSET', KEYS[key + i], 't', tostring(tokens[i]), 'at', tostring(now))
      redis.call('PEXPIRE', KEYS[key + i], math.ceil((capacity - tokens[i]) / rate * 1000) + 1000)
    end
    reply[#reply + 1] = tostring(tokens[i])
    reply[#reply + 1] = granted
  end
  key = key + n
  arg = arg + 1 + 3 * n
end
return reply
"""


def redis_client(url: str, timeout: float, connections: int) -> Redis:
    """A client with bounded connects and reads and no retries of its own (a failed take
    falls back at once instead of waiting through retries)."""
    pool = ConnectionPool.from_url(
        url,
        max_connections=connections,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis(connection_pool=pool)


Pending = tuple[Take, Ask, asyncio.Future[Verdict]]
"""A take on its way to Redis: its buckets, what it asks for, and who waits for the answer."""


class SharedBuckets:
    """The buckets in Redis, with the local fallback (see the module docstring)."""

    def __init__(
        self,
        client: Redis,
        local: LocalBuckets,
        leases: Leases,
        metrics: GuardMetrics,
        *,
        timeout: float,
        connections: int,
        retry_seconds: float,
    ) -> None:
        self.client = client
        self.local = local
        self.leases = leases
        self.metrics = metrics
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.shared = True
        self.last_error: str | None = None
        self._slots = asyncio.Semaphore(connections)
        self._script = client.register_script(TAKE)
        self._probe: asyncio.Task[None] | None = None
        self._pending: list[Pending] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._busy = metrics.local_takes.labels("busy")
        self._fallback = metrics.local_takes.labels("fallback")
        self._leased = metrics.leased_takes

    def __repr__(self) -> str:
        state = "shared" if self.shared else "per-process fallback"
        return f"<SharedBuckets {state} {self.leases!r}>"

    async def start(self) -> None:
        """Check Redis once; unreachable, the gateway starts on its own buckets."""
        try:
            async with asyncio.timeout(self.timeout * 4):
                await self.client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            self._lose(exc)
        else:
            log.info("rate limits are shared through Redis")

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        for task in list(self._sending):
            task.cancel()
        await self.client.aclose()

    def report(self) -> dict[str, object]:
        """What /readyz shows: shared, or falling back (and why)."""
        if self.shared:
            return {"rate_limits": "shared"}
        return {"rate_limits": "per-process fallback", "last_error": self.last_error}

    def decide(self, take: Take) -> Verdict | None:
        """The take decided without Redis: from this process's leases, or by its own
        buckets while Redis is unreachable; None when Redis must decide."""
        if not self.shared:
            self._fallback.inc()
            return self.local.take(take, time.monotonic())
        verdict = self.leases.spend(take, time.monotonic())
        if verdict is not None:
            self._leased.inc()
        return verdict

    async def take(self, take: Take) -> Verdict:
        """One take: from the leases when they can, else in Redis (asking for the next
        lease too), or in this process when Redis cannot answer in time.

        Takes made in the same turn of the event loop go to Redis as one script call: under
        concurrency one round trip decides many requests (measured with benchmarks/edge.py:
        a call costs the gateway ~60 us of CPU in redis-py, whatever the number of takes).
        """
        verdict = self.decide(take)
        if verdict is not None:
            return verdict
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._pending.append((take, self.leases.ask(take, time.monotonic()), future))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        elif len(self._pending) >= MAX_BATCH:
            self._flush()
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[Pending]) -> None:
        slots = self._slots
        if slots.locked():
            try:
                async with asyncio.timeout(self.timeout):
                    await slots.acquire()
            except TimeoutError:
                self._busy.inc(len(batch))
                self._decide_here(batch)
                return
        else:
            await slots.acquire()  # free: no wait
        keys: list[str] = []
        args: list[float] = []
        for take, ask, _ in batch:
            args.append(len(take))
            for (limit, key), (want, _) in zip(take, ask, strict=True):
                keys.append(KEY_PREFIX + key)
                args += (limit.rate, limit.capacity, want)
        try:
            reply = await self._script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._lose(exc)
            self._fallback.inc(len(batch))
            self._decide_here(batch)
            return
        finally:
            slots.release()
        now = time.monotonic()
        at = 0
        settle = self.leases.settle
        for take, ask, future in batch:
            n = len(take)
            values = reply[at + 1 : at + 1 + 2 * n]
            verdict = settle(
                take,
                ask,
                reply[at] == 1,
                [float(t) for t in values[0::2]],
                [int(g) for g in values[1::2]],
                now,
            )
            at += 1 + 2 * n
            if not future.done():  # its client may have left
                future.set_result(verdict)

    def _decide_here(self, batch: list[Pending]) -> None:
        now = time.monotonic()
        for take, ask, future in batch:
            self.leases.abandon(ask)
            verdict = self.local.take(take, now)
            if not future.done():
                future.set_result(verdict)

    def _lose(self, exc: BaseException) -> None:
        self.last_error = str(exc) or type(exc).__name__
        if not self.shared:
            return
        self.shared = False
        self.leases.clear()  # their tokens are lost: the process limits alone now
        self.metrics.fallback.set(1)
        self.metrics.fallbacks.inc()
        log.warning(
            "Redis is unreachable (%s): rate limits are per process until it answers again",
            self.last_error,
        )
        self._probe = asyncio.create_task(self._until_back())

    async def _until_back(self) -> None:
        while True:
            await asyncio.sleep(self.retry_seconds)
            try:
                async with asyncio.timeout(self.timeout * 4):
                    await self.client.ping()
            except (RedisError, OSError, TimeoutError) as exc:
                self.last_error = str(exc) or type(exc).__name__
                continue
            self.shared = True
            self.last_error = None
            self.metrics.fallback.set(0)
            self._probe = None
            log.info("Redis answers again: rate limits are shared")
            return
