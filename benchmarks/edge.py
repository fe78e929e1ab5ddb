"""Edge benchmark: what JWT authentication and a rate limit cost an endpoint, side by side.

    python -m benchmarks.edge [--seconds 8] [--clients 10] [--delay 0ms]

The same endpoint (one call to the catalog; without `--delay` the gateway's own work and the
Redis round trip dominate, with `--delay 20ms` the backend does, as it mostly would) is
served twice by one gateway: `/open` without anything, `/protected` behind a jwt
authenticator (RS256, keys from a JWKS file) and a per-user rate limit far above the load.
Rounds of the two alternate so drift in machine load hits both alike. Printed: p50 latency
and requests/s of /protected divided by /open (target <= 1.15x latency), once with the
buckets in the process and once shared through Redis (an embedded one, unless REDIS_URL is
set), plus the in-process cost of one token verification and of a cached lookup, which is
why tokens are verified once, and the in-process CPU of each step per request (the auth
step with a cached token, the rate-limit step with buckets in the process or served from a
lease), best of several runs.

Processes: one catalog service, two gateway workers (local buckets, Redis buckets), an
embedded Redis, and the load generator in this process, on 127.0.0.1 ephemeral ports; every
process is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from prometheus_client import CollectorRegistry
from starlette.requests import Request

from benchmarks.core import latencies
from gateway.config.edge import JwtAuth, RateLimitSpec
from gateway.devtools.embedded_pg import free_port
from gateway.devtools.embedded_redis import redis_server
from gateway.engine.context import RequestContext
from gateway.engine.templates import Ref
from gateway.web.auth.cache import ExpiringCache
from gateway.web.auth.step import auth_step
from gateway.web.auth.tokens import JwtAuthenticator
from gateway.web.guard_metrics import GuardMetrics
from gateway.web.ratelimit.buckets import Limit, LocalBuckets, Take, Verdict
from gateway.web.ratelimit.leases import Leases
from gateway.web.ratelimit.step import ProcessLimiter, rate_limit_step
from gateway.web.steps import Step
from tests.processes import Running, start_gateway, start_service

CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}", timeout: 5s, max_connections: 512}}
auth:
  users: {{kind: jwt, jwks_file: "{jwks}", issuer: bench, audience: bench, algorithms: [RS256]}}
rate_limits:
  per_user: {{key: "{{auth.sub}}", rate: 1000000/s}}
{cluster}
endpoints:
  - path: /open
    calls: [{{name: a, backend: catalog, path: /products/1, query: {{delay: "{delay}"}}}}]
  - path: /protected
    auth: {{use: users, scopes: [read]}}
    rate_limit: [per_user]
    calls: [{{name: a, backend: catalog, path: /products/1, query: {{delay: "{delay}"}}}}]
"""


async def side_by_side(
    gateway: Running, tokens: list[str], clients: int, seconds: float
) -> tuple[list[float], list[float]]:
    """Latencies of /open and /protected, in alternating rounds; each client sends its own
    user's token (so each is verified once, then found in the cache)."""
    open_samples: list[float] = []
    protected: list[float] = []
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as plain:
        sessions = [
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1),
                headers={"Authorization": f"Bearer {token}"},
            )
            for token in tokens[:clients]
        ]
        try:

            async def round_of(path: str, round_seconds: float) -> list[float]:
                if path == "/open":
                    return await latencies(plain, gateway.url + path, clients, round_seconds)
                runs = [latencies(s, gateway.url + path, 1, round_seconds) for s in sessions]
                return [x for run in await asyncio.gather(*runs) for x in run]

            await round_of("/protected", 1.0)  # warm-up: connections, tokens verified once
            await round_of("/open", 1.0)
            for _ in range(4):
                open_samples += await round_of("/open", seconds / 4)
                protected += await round_of("/protected", seconds / 4)
        finally:
            for session in sessions:
                await session.close()
    return open_samples, protected


def verification_cost(
    private: rsa.RSAPrivateKey, public_jwk: dict[str, object]
) -> tuple[float, float]:
    """Seconds per PyJWT RS256 verification, and per cached lookup (a dict probe)."""
    token = jwt.encode(
        {"sub": "u", "exp": int(time.time()) + 600, "iss": "bench", "aud": "bench"},
        private,
        algorithm="RS256",
    )
    key = jwt.PyJWK(public_jwk, algorithm="RS256")
    runs = 2000
    verify = timeit.timeit(
        lambda: jwt.decode(token, key, algorithms=["RS256"], audience="bench", issuer="bench"),
        number=runs,
    )
    cache = {token: {"sub": "u"}}
    probe = timeit.timeit(lambda: cache.get(token), number=runs * 100)
    return verify / runs, probe / (runs * 100)


class LeasedLimiter:
    """The shared limiter's path for a take its leases serve (no Redis: the lease is made
    as an answer from the script would make it)."""

    def __init__(self, limit: Limit, key: str) -> None:
        self.leases = Leases(3600.0, 10)  # a lease that outlives the measurement
        take = [(limit, key)]
        for _ in range(2):  # a first token, then a lease of the cap
            ask = self.leases.ask(take, time.monotonic())
            self.leases.settle(take, ask, True, [0.0], [ask[0][0]], time.monotonic())

    def decide(self, take: Take) -> Verdict | None:
        return self.leases.spend(take, time.monotonic())

    async def take(self, take: Take) -> Verdict:
        raise AssertionError("the lease ran out (a cap of 100000 tokens): fewer runs")


def step_costs() -> dict[str, float]:
    """Seconds of CPU per request of the auth step (a cached HS256 token: the cached path
    is the same whatever the algorithm) and of the rate-limit step, in this process."""
    secret = "s" * 32
    metrics = GuardMetrics(CollectorRegistry())
    spec = JwtAuth(
        kind="jwt", secret=secret, issuer="bench", audience="bench", algorithms=["HS256"]
    )
    authenticator = JwtAuthenticator(
        "users", spec, keys=None, secret=secret.encode(), cache=ExpiringCache(16), max_bytes=8192
    )
    claims = {"sub": "u1", "iss": "bench", "aud": "bench", "exp": int(time.time()) + 600}
    token = jwt.encode({**claims, "scope": "read"}, secret, algorithm="HS256")
    limit = Limit.from_spec("per_user", RateLimitSpec(key="{auth.sub}", rate="1000000/s"))
    steps: dict[str, Step] = {
        "auth step, cached": auth_step(
            [authenticator], ["read"], [Ref("auth", "sub")], [], metrics
        ),
        "limit step, process": rate_limit_step(ProcessLimiter(LocalBuckets(16)), [limit], metrics),
        "limit step, leased": rate_limit_step(
            LeasedLimiter(limit, "per_user:u1"), [limit], metrics
        ),
    }
    headers = [
        (b"host", b"127.0.0.1"),
        (b"accept", b"*/*"),
        (b"authorization", f"Bearer {token}".encode()),
    ]

    def scope() -> dict[str, object]:
        return {"type": "http", "method": "GET", "headers": list(headers), "client": ("::1", 1)}

    async def measure(step: Step, context: RequestContext, runs: int) -> float:
        best = float("inf")
        for _ in range(7):
            requests = [Request(scope()) for _ in range(runs)]
            started = time.process_time()
            for request in requests:
                await step(request, context)
            best = min(best, (time.process_time() - started) / runs)
        return best

    async def all_of() -> dict[str, float]:
        plain = RequestContext.from_scope(scope(), "bench")
        authed = await steps["auth step, cached"](Request(scope()), plain)
        assert isinstance(authed, RequestContext), authed
        costs = {}
        for name, step in steps.items():
            costs[name] = await measure(step, plain if name.startswith("auth") else authed, 10000)
        return costs

    return asyncio.run(all_of())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per pair")
    parser.add_argument("--clients", type=int, default=10, help="concurrent clients")
    parser.add_argument("--delay", default="0ms", help="the backend's delay per call")
    args = parser.parse_args(argv)

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = {**RSAAlgorithm.to_jwk(private.public_key(), as_dict=True), "kid": "k1"}
    now = int(time.time())
    tokens = [
        jwt.encode(
            {"sub": f"user{i}", "iss": "bench", "aud": "bench", "exp": now + 3600, "scope": "read"},
            private,
            algorithm="RS256",
            headers={"kid": "k1"},
        )
        for i in range(args.clients)
    ]
    results: dict[str, tuple[list[float], list[float]]] = {}
    catalog = start_service("catalog")
    try:
        with tempfile.TemporaryDirectory() as tmp, redis_server(free_port()) as redis_url:
            jwks = Path(tmp) / "jwks.json"
            jwks.write_text(json.dumps({"keys": [public_jwk]}))
            for name, cluster in (("process", ""), ("redis", 'cluster: {redis: "${REDIS_URL}"}')):
                config = Path(tmp) / f"{name}.yaml"
                config.write_text(
                    CONFIG.format(catalog=catalog.url, jwks=jwks, cluster=cluster, delay=args.delay)
                )
                env = {"GATEWAY_LOG_LEVEL": "warning", "REDIS_URL": redis_url}
                gateway = start_gateway(config, env=env)
                try:
                    results[name] = asyncio.run(
                        side_by_side(gateway, tokens, args.clients, args.seconds)
                    )
                finally:
                    gateway.stop()
    finally:
        catalog.stop()
    verify, probe = verification_cost(private, public_jwk)
    costs = step_costs()

    print(f"edge  ({args.clients} clients, one gateway worker, backend delay {args.delay})")
    for name, (open_samples, protected) in results.items():
        ratio = statistics.median(protected) / statistics.median(open_samples)
        # closed-loop clients: requests/s over the same total time of each side's rounds
        rate_ratio = len(protected) / len(open_samples)
        print(f"  buckets in {name}:")
        print(f"    p50 open            {statistics.median(open_samples) * 1000:7.2f} ms")
        print(f"    p50 jwt + limit     {statistics.median(protected) * 1000:7.2f} ms")
        print(f"    latency ratio       {ratio:7.3f}   (target <= 1.15)")
        print(
            f"    req/s ratio         {rate_ratio:7.3f}   ({len(protected) / args.seconds:.0f} / "
            f"{len(open_samples) / args.seconds:.0f} req/s)"
        )
    print(f"  RS256 verification    {verify * 1e6:7.1f} us per token (PyJWT, in process)")
    print(f"  cached lookup         {probe * 1e6:7.3f} us per token")
    for name, cost in costs.items():
        print(f"  {name:21s} {cost * 1e6:7.2f} us CPU per request (in process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
