"""The call cache and the endpoints' own ETag/304: tables for the rules, then a real gateway
in front of a backend written here that counts what reaches it."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import httpx
import pytest

from gateway.backends.freshness import freshness
from gateway.config.loader import parse_spec
from gateway.errors import ConfigError
from gateway.policies.cache import CachePolicy, Caches, Entry, cached, lifetime, size_of
from gateway.types import BackendRequest, BackendResponse
from tests.processes import Running, start_gateway
from tests.threaded_http import JsonHandler, ThreadedHttp

# --- the rules, as tables ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cache_control", "expires", "date", "expected"),
    [
        (None, None, None, (None, True)),
        ("max-age=60", None, None, (60.0, True)),
        ("public, s-maxage=30, max-age=60", None, None, (30.0, True)),
        ("max-age=0", None, None, (0.0, True)),
        ("no-store", None, None, (None, False)),
        ("private, max-age=60", None, None, (None, False)),
        ("no-cache", None, None, (None, False)),
        ("max-age=abc", None, None, (None, False)),
        (None, "Mon, 01 Dec 2026 10:01:00 GMT", "Mon, 01 Dec 2026 10:00:00 GMT", (60.0, True)),
        (None, "0", "Mon, 01 Dec 2026 10:00:00 GMT", (None, False)),  # invalid: expired
        (
            "max-age=5",
            "Mon, 01 Dec 2026 10:01:00 GMT",
            "Mon, 01 Dec 2026 10:00:00 GMT",
            (5.0, True),
        ),
    ],
)
def test_freshness(
    cache_control: str | None, expires: str | None, date: str | None, expected: tuple[Any, bool]
) -> None:
    assert freshness(cache_control, expires, date) == expected


POLICY = CachePolicy("c", ttl=None, stale=0.0, max_entries=10)


@pytest.mark.parametrize(
    ("policy", "response", "expected"),
    [
        (POLICY, BackendResponse(200, {}, 30.0), 30.0),
        (POLICY, BackendResponse(200, {}), None),  # nobody said how long
        (CachePolicy("c", 5.0, 0.0, 10), BackendResponse(200, {}, 30.0), 5.0),  # ttl overrides
        (CachePolicy("c", 5.0, 0.0, 10), BackendResponse(200, {}, 30.0, False), None),
        (POLICY, BackendResponse(200, {}, 0.0), None),  # stale at once, nothing to serve it for
        (CachePolicy("c", None, 60.0, 10), BackendResponse(200, {}, 0.0), 0.0),
    ],
)
def test_lifetime(policy: CachePolicy, response: BackendResponse, expected: float | None) -> None:
    assert lifetime(policy, response) == expected


def test_entries_and_bytes_stay_bounded_over_10000_keys() -> None:
    caches = Caches(max_bytes=200_000)
    small = caches.cache("small", max_entries=100)
    big = caches.cache("big", max_entries=100_000)
    for i in range(10_000):
        response = BackendResponse(200, {"i": i, "pad": "x" * 100})
        small.put(("s", i), Entry(response, size_of(response), 1e9, 1e9))
        big.put(("b", i), Entry(response, size_of(response), 1e9, 1e9))
        assert caches.total <= caches.max_bytes
    assert small.counters.entries == 100  # its own bound
    assert caches.total == small.counters.bytes + big.counters.bytes <= 200_000
    assert big.get(("b", 9_999)) is not None and big.get(("b", 0)) is None  # LRU order
    assert small.counters.evictions + big.counters.evictions == 20_000 - len(small.entries) - len(
        big.entries
    )


async def test_peek_answers_what_a_call_would_from_the_cache_and_refreshes_stale_once() -> None:
    now = [100.0]
    caches = Caches(max_bytes=1_000_000, clock=lambda: now[0])
    sent: list[str] = []
    release = asyncio.Event()

    async def upstream(request: BackendRequest) -> BackendResponse:
        sent.append(request.path)
        if len(sent) > 1:
            await release.wait()  # the background refresh is held here
        return BackendResponse(200, {"n": len(sent)})

    call = cached(CachePolicy("c", ttl=10.0, stale=60.0, max_entries=10), caches)(upstream)
    request = BackendRequest(path="/p")
    assert call.peek(request) is None  # nothing kept yet: the call must go upstream
    assert (await call(request)).body == {"n": 1}
    hit = call.peek(request)
    assert hit is not None and hit.body == {"n": 1}
    assert call.peek(request) is not None
    assert call.peek(BackendRequest(path="/p", identity="bob")) is None  # another user's
    counters = call.store.counters
    assert (counters.misses, counters.hits) == (1, 2)
    now[0] += 11.0  # stale now, still servable
    for _ in range(3):
        stale = call.peek(request)
        assert stale is not None and stale.body == {"n": 1}
    assert counters.stale == 3 and len(caches.refreshes) == 1  # ONE refresh, in the background
    release.set()
    await asyncio.gather(*caches.refreshes)
    assert sent == ["/p", "/p"]
    fresh = call.peek(request)
    assert fresh is not None and fresh.body == {"n": 2}
    now[0] += 100.0  # past `stale` too: gone
    assert call.peek(request) is None


def test_only_idempotent_calls_may_be_cached() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_spec(
            "version: 1\nbackends: {c: {kind: http, url: 'http://h:1'}}\n"
            "endpoints: [{path: /a, calls: [{backend: c, method: POST, cache: {ttl: 1s}}]}]\n",
            "t.yaml",
        )
    assert caught.value.problems == [
        "t.yaml: endpoints[0].calls[0].cache: only idempotent calls are cached "
        "(add `idempotent: true`)"
    ]


# --- end to end ------------------------------------------------------------------------------


class Upstream:
    """A backend that counts requests per path and answers what the query asks for:
    `cc` -> its Cache-Control; `hold=1` -> wait until `release` is set."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.release = threading.Event()
        self.lock = threading.Lock()
        upstream = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                with upstream.lock:
                    upstream.seen[url.path] += 1
                    n = upstream.seen[url.path]
                if query.get("hold") == "1" and n > 1:
                    upstream.release.wait(30)
                answer = {"n": n, "path": url.path, "user": self.headers.get("authorization")}
                cache_control = {"Cache-Control": query["cc"]} if "cc" in query else {}
                self.send_json(answer, headers=cache_control)
                with upstream.lock:
                    upstream.answered[url.path] += 1

        self.http = ThreadedHttp(Handler)
        self.url = self.http.url

    def close(self) -> None:
        self.release.set()
        self.http.close()


CONFIG = """
version: 1
backends:
  up:
    kind: http
    url: "{up}"
    cache: {{ttl: 30s}}
  raw: {{kind: http, url: "{up}"}}
endpoints:
  - path: /fixed/{{key}}
    calls: [{{backend: up, path: "/fixed/{{key}}"}}]
  - path: /told
    calls: [{{backend: raw, path: /told, query: {{cc: "{{query.cc}}"}}, cache: {{max_entries: 10}}}}]
  - path: /private
    calls: [{{backend: up, path: /private, query: {{cc: "private, max-age=60"}}}}]
  - path: /stale
    calls:
      - {{backend: raw, path: /stale, query: {{cc: "max-age=0", hold: "1"}}, cache: {{stale: 5m}}}}
  - path: /mine
    forward_headers: [authorization]
    calls: [{{backend: up, path: /mine}}]
  - path: /page
    cache_control: "public, max-age=30"
    calls: [{{backend: up, path: /page}}]
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    path = tmp_path_factory.mktemp("cache") / "gateway.yaml"
    path.write_text(CONFIG.format(up=upstream.url))
    running = start_gateway(path, env={"GATEWAY_CACHE_MAX_BYTES": "300000"})
    yield running
    assert running.stop() == 0


@pytest.fixture
def http(gateway: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


def metric(http: httpx.Client, name: str, cache: str) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(f'{name}{{cache="{cache}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no {name} for {cache}")


def test_repeated_gets_reach_the_backend_once_per_ttl(
    http: httpx.Client, upstream: Upstream
) -> None:
    bodies = [http.get("/fixed/a").json() for _ in range(5)]
    assert bodies == [{"n": 1, "path": "/fixed/a", "user": None}] * 5
    assert upstream.seen["/fixed/a"] == 1
    assert metric(http, "gateway_cache_hits_total", "up") >= 4


def test_the_upstreams_max_age_is_honoured_and_no_store_is_not_kept(
    http: httpx.Client, upstream: Upstream
) -> None:
    for _ in range(3):
        http.get("/told", params={"cc": "max-age=60"})
    assert upstream.seen["/told"] == 1
    for _ in range(3):
        http.get("/told", params={"cc": "no-store"})
    assert upstream.seen["/told"] == 4  # one per request: never kept
    for _ in range(3):
        http.get("/told")  # says nothing, and this call has no ttl: not kept
    assert upstream.seen["/told"] == 7


def test_private_answers_are_never_kept_even_with_a_ttl(
    http: httpx.Client, upstream: Upstream
) -> None:
    for _ in range(3):
        http.get("/private")
    assert upstream.seen["/private"] == 3


def test_two_users_never_get_each_others_answer(http: httpx.Client, upstream: Upstream) -> None:
    alice = [http.get("/mine", headers={"Authorization": "Bearer alice"}).json() for _ in range(3)]
    bob = [http.get("/mine", headers={"Authorization": "Bearer bob"}).json() for _ in range(3)]
    assert {a["user"] for a in alice} == {"Bearer alice"}
    assert {b["user"] for b in bob} == {"Bearer bob"}
    assert upstream.seen["/mine"] == 2  # one each, then each from the cache


def test_stale_answers_are_served_while_one_refresh_runs(
    http: httpx.Client, gateway: Running, upstream: Upstream
) -> None:
    assert http.get("/stale").json()["n"] == 1  # kept, stale at once (max-age=0)

    async def many() -> list[int]:
        async with aiohttp.ClientSession() as session:

            async def one() -> int:
                async with session.get(f"{gateway.url}/stale") as response:
                    body = await response.json()
                    return int(body["n"])

            return await asyncio.gather(*(one() for _ in range(20)))

    # the refresh is held by the backend: every one of these is served the stale answer
    assert asyncio.run(many()) == [1] * 20
    assert upstream.seen["/stale"] == 2  # the first fill and ONE refresh
    upstream.release.set()
    answers: list[int] = []
    for _ in range(200):  # wait for the refresh to land (bounded), not for a fixed time
        answers.append(http.get("/stale").json()["n"])
        if answers[-1] >= 2:
            break
    assert answers[-1] >= 2
    assert metric(http, "gateway_cache_stale_served_total", "raw GET /stale.call0") >= 20


def test_the_byte_budget_holds_under_10000_distinct_keys(
    http: httpx.Client, gateway: Running
) -> None:
    async def fill() -> list[int]:
        connector = aiohttp.TCPConnector(limit=32)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(i: int) -> int:
                async with session.get(f"{gateway.url}/fixed/k{i}") as response:
                    await response.read()
                    return response.status

            return await asyncio.gather(*(one(i) for i in range(10_000)))

    assert set(asyncio.run(fill())) == {200}
    assert metric(http, "gateway_cache_bytes", "up") <= 300_000
    assert metric(http, "gateway_cache_evictions_total", "up") > 0


def test_an_endpoint_answers_an_etag_and_304(http: httpx.Client) -> None:
    first = http.get("/page")
    assert first.status_code == 200
    assert first.headers["cache-control"] == "public, max-age=30"
    etag = first.headers["etag"]
    again = http.get("/page", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    other = http.get("/page", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.headers["etag"] == etag


def test_cache_settings_on_a_backend_a_call_and_an_endpoint_load() -> None:
    parse_spec(
        "version: 1\nbackends: {c: {kind: http, url: 'http://h:1', cache: {ttl: 30s, stale: 5m}}}\n"
        "endpoints: [{path: /a, cache_control: 'public, max-age=30', "
        "calls: [{backend: c, cache: {ttl: 1s, shared: true}}]}]\n",
        "t.yaml",
    )


SHARED = """
version: 1
backends:
  up: {{kind: http, url: "{up}", cache: {{ttl: 30s, store: redis}}}}
cluster: {{redis: "{redis}"}}
endpoints:
  - path: /shared/{{key}}
    calls: [{{backend: up, path: "/shared/{{key}}"}}]
"""


def test_a_redis_cache_is_shared_by_every_gateway(
    upstream: Upstream, redis_url: str, gateway_factory: Callable[[str], Running]
) -> None:
    first = gateway_factory(SHARED.format(up=upstream.url, redis=redis_url))
    second = gateway_factory(SHARED.format(up=upstream.url, redis=redis_url))
    with httpx.Client(timeout=10) as http:
        a = http.get(f"{first.url}/shared/k1").json()
        b = http.get(f"{second.url}/shared/k1").json()
        c = http.get(f"{first.url}/shared/k1").json()
    with httpx.Client(base_url=second.url, timeout=10) as other:
        hits = metric(other, "gateway_cache_hits_total", "up")
    assert a == b == c == {"n": 1, "path": "/shared/k1", "user": None}
    assert upstream.seen["/shared/k1"] == 1  # fetched once, for both processes
    assert hits == 1


def test_a_redis_cache_that_is_down_sends_calls_upstream(
    upstream: Upstream, gateway_factory: Callable[[str], Running]
) -> None:
    with socket.socket() as probe:  # nothing listens there: connections are refused
        probe.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    gateway = gateway_factory(SHARED.format(up=upstream.url, redis=dead))
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        statuses = [http.get("/shared/k2").status_code for _ in range(3)]
        errors = metric(http, "gateway_cache_errors_total", "up")
    assert statuses == [200, 200, 200]
    assert upstream.seen["/shared/k2"] == 3
    assert errors >= 3


def test_a_reload_that_changes_cluster_redis_moves_the_shared_cache_to_it(
    upstream: Upstream, redis_url: str, tmp_path: Path
) -> None:
    with socket.socket() as probe:  # nothing listens there: connections are refused
        probe.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    config = tmp_path / "gateway.yaml"
    config.write_text(SHARED.format(up=upstream.url, redis=dead))
    gateway = start_gateway(config)
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            assert http.get("/shared/k3").status_code == 200  # Redis down: upstream
            assert metric(http, "gateway_cache_errors_total", "up") >= 1
            config.write_text(SHARED.format(up=upstream.url, redis=redis_url))
            gateway.process.send_signal(signal.SIGHUP)
            for _ in range(2000):  # each try a round trip: until the new config serves
                if 'gateway_config_reloads_total{outcome="ok"} 1.0' in http.get("/metrics").text:
                    break
            else:
                raise AssertionError("the reload never finished")
            errors = metric(http, "gateway_cache_errors_total", "up")
            bodies = [http.get("/shared/k3").json() for _ in range(3)]
            assert metric(http, "gateway_cache_errors_total", "up") == errors  # no more
            assert metric(http, "gateway_cache_hits_total", "up") == 2
    finally:
        assert gateway.stop() == 0
    assert bodies == [{"n": 2, "path": "/shared/k3", "user": None}] * 3
    assert upstream.seen["/shared/k3"] == 2  # once before the reload, once into the new Redis
