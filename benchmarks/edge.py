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
why tokens are verified once.

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

from benchmarks.core import latencies
from gateway.devtools.embedded_pg import free_port
from gateway.devtools.embedded_redis import redis_server
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
