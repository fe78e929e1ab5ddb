"""The config of auth, CORS and rate limits (`gateway check`), and the pure pieces behind
them: rates, token buckets, the expiring cache, CORS answers, the JWKS key choice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.edge import RateLimitSpec, parse_rate
from gateway.config.loader import parse_spec
from gateway.engine.templates import Sources, parse_template, render_text
from gateway.errors import ConfigError, MissingValue
from gateway.web.auth.cache import ExpiringCache
from gateway.web.auth.jwks import parse_jwks, usable_key
from gateway.web.auth.keystore import new_key, parse_key
from gateway.web.ratelimit.buckets import MAX_KEY_CHARS, Limit, LocalBuckets
from gateway.web.ratelimit.step import ratelimit_heads, ratelimit_value
from tests.idp import SigningKey
from tests.processes import REPO

BASE = """
version: 1
backends:
  catalog: {kind: http, url: "http://127.0.0.1:9"}
  db: {kind: postgres, dsn: "postgresql://u@127.0.0.1:9/d"}
auth:
  users: {kind: jwt, jwks_url: "http://127.0.0.1:9/jwks.json", algorithms: [RS256]}
  partners: {kind: api_key, store: db}
rate_limits:
  per_user: {key: "{auth.sub}", rate: 100/m, burst: 20}
  per_ip: {key: "{client.ip}", rate: 20/s}
"""


def problems(text: str) -> list[str]:
    try:
        parse_spec(text, "t.yaml")
    except ConfigError as exc:
        return exc.problems
    return []


def test_the_contract_of_the_issue_is_a_valid_config() -> None:
    spec = parse_spec(
        BASE
        + """
cors:
  allow_origins: [https://shop.example]
  allow_methods: [GET, POST]
  allow_headers: [authorization, content-type]
  expose_headers: [x-request-id, x-gateway-complete]
  allow_credentials: true
  max_age: 10m
cluster:
  redis: ${REDIS_URL}
endpoints:
  - path: /api/me
    auth: {use: users, scopes: [profile:read]}
    rate_limit: [per_user, per_ip]
    calls:
      - backend: catalog
        path: /users/{auth.sub}
        headers: {x-user-id: "{auth.sub}", x-tenant: "{auth.claims.tenant}"}
  - path: /api/partners
    auth: {use: [users, partners]}
    calls: [{backend: catalog, path: "/p/{auth.key.name}"}]
""",
        "t.yaml",
        environ={"REDIS_URL": "redis://redis:6379/0"},
    )
    assert spec.endpoints[1].auth is not None and spec.endpoints[1].auth.use == [
        "users",
        "partners",
    ]
    assert spec.rate_limits["per_user"].rate.per_second == pytest.approx(100 / 60)
    assert spec.cluster.redis == "redis://redis:6379/0"


ENDPOINT = """
endpoints:
  - path: /x/{{id}}
    {extra}
    calls: [{{backend: catalog, path: "{path}"}}]
"""


@pytest.mark.parametrize(
    ("extra", "path", "expected"),
    [
        ("", "/u/{auth.sub}", "endpoints[0].calls[0].path: {auth.sub}: the endpoint has no `auth`"),
        (
            "auth: {use: nobody}",
            "/",
            "endpoints[0].auth.use: unknown authenticator 'nobody' (known: partners, users)",
        ),
        (
            "auth: {use: users}",
            "/{auth.secret}",
            "endpoints[0].calls[0].path: {auth.secret}: auth has sub, claims",
        ),
        ("auth: {use: partners}", "/{auth.claims.x}", "claims come from a jwt authenticator"),
        ("auth: {use: users}", "/{auth.key.name}", "key values come from an api_key authenticator"),
        (
            "rate_limit: [per_usr]",
            "/",
            "endpoints[0].rate_limit[0]: unknown rate limit 'per_usr' (known: per_ip, per_user)",
        ),
        (
            "rate_limit: [per_ip, per_ip]",
            "/",
            "endpoints[0].rate_limit[1]: 'per_ip' is listed twice",
        ),
        (
            "rate_limit: [per_user]",
            "/",
            "endpoints[0].rate_limit[0]: per_user's key {auth.sub}: the endpoint has no `auth`",
        ),
        (
            "cors: {allow_origins: ['*'], allow_credentials: true}",
            "/",
            "endpoints[0].cors.allow_origins: `*` with allow_credentials",
        ),
        ("cors: {allow_origins: [https://shop.example/app]}", "/", "is not an origin"),
    ],
)
def test_gateway_check_names_each_mistake_of_an_endpoint(
    extra: str, path: str, expected: str
) -> None:
    found = problems(BASE + ENDPOINT.format(extra=extra, path=path))
    assert len(found) == 1 and expected in found[0], found
    assert found[0].startswith("t.yaml: ")


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            "auth: {a: {kind: jwt, jwks_url: 'http://i/j', algorithms: [none]}}",
            "auth.a.algorithms[0]: `none` is not a signature algorithm",
        ),
        (
            "auth: {a: {kind: jwt, jwks_url: 'http://i/j', algorithms: [HS256]}}",
            "auth.a.algorithms: HS256 only with `secret`",
        ),
        (
            "auth: {a: {kind: jwt, secret: short, algorithms: [HS256]}}",
            "auth.a.secret: shorter than 32 bytes",
        ),
        (
            "auth: {a: {kind: jwt, secret: '${FANOUT_TEST_UNSET}', algorithms: [HS256]}}",
            "auth.a.secret: ${FANOUT_TEST_UNSET} is not set (and has no default)",
        ),
        (
            "auth: {a: {kind: jwt, secret: '" + "k" * 32 + "'}}",
            "auth.a.algorithms: RS256 need public keys",
        ),
        (
            "auth: {a: {kind: jwt, secret: '" + "k" * 32 + "', jwks_url: 'http://i/j'}}",
            "give exactly one of `jwks_url`, `jwks_file` or `secret`",
        ),
        ("auth: {a: {kind: api_key, store: catalog}}", "auth.a.store: 'catalog' does not run SQL"),
        ("auth: {a: {kind: api_key, store: nowhere}}", "auth.a.store: unknown backend 'nowhere'"),
        (
            "auth: {a: {kind: jwt, jwks_url: 'http://i/j', issuerr: x}}",
            "auth.a.issuerr: unknown field (did you mean 'issuer'?)",
        ),
        ("auth: {a: {kind: saml}}", "auth.a: Input tag 'saml' found using 'kind' does not match"),
        (
            "rate_limits: {r: {key: '{x}', rate: lots}}",
            "rate_limits.r.rate: 'lots' is not a rate",
        ),
        (
            "rate_limits: {r: {key: '{calls.a.b}', rate: 1/s}}",
            "rate_limits.r.key: {calls.a.b}: a limit is taken before any call runs",
        ),
        ("cluster: {redis: '${REDIS}'}", "cluster.redis: ${REDIS} is not set (and has no default)"),
        ("cluster: {redis: 'http://r:6379'}", "a redis:// (or rediss://, unix://) URL"),
        (
            "cors: {allow_origins: ['*'], expose_headers: ['*'], allow_credentials: true}",
            "cors.expose_headers: `*` with allow_credentials",
        ),
    ],
)
def test_gateway_check_names_each_mistake_of_a_section(section: str, expected: str) -> None:
    found = problems(
        "version: 1\nbackends: {catalog: {kind: http, url: 'http://127.0.0.1:9'}}\n" + section
    )
    assert any(expected in line for line in found), found


def test_an_unset_or_short_jwt_secret_is_one_line_before_serving(tmp_path: Path) -> None:
    text = "version: 1\nauth: {a: {kind: jwt, secret: '${JWT_SECRET}', algorithms: [HS256]}}\n"
    with pytest.raises(ConfigError) as caught:
        parse_spec(text, "t", environ={})
    assert caught.value.problems == [
        "t: auth.a.secret: ${JWT_SECRET} is not set (and has no default)"
    ]
    with pytest.raises(ConfigError) as caught:
        parse_spec(text, "t", environ={"JWT_SECRET": "short"})
    assert caught.value.problems == ["t: auth.a.secret: shorter than 32 bytes: guessable offline"]
    spec = parse_spec(text, "t", environ={"JWT_SECRET": "k" * 32})
    assert spec.auth["a"].secret == "k" * 32  # type: ignore[union-attr]
    config = tmp_path / "g.yaml"
    config.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(config), "--port", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == f"{config}: auth.a.secret: ${{JWT_SECRET}} is not set (and has no default)"
    )


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [
        ("100/m", 100, 60),
        ("20/s", 20, 1),
        ("5/10s", 5, 10),
        ("1000/h", 1000, 3600),
        ("2 / 500ms", 2, 0.5),
    ],
)
def test_rates(text: str, count: float, period: float) -> None:
    assert parse_rate(text) == {"count": count, "period": period}


@pytest.mark.parametrize("text", ["0/s", "10", "10/d", "ten/s", "1/0s", "9" * 40 + "/s"])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueError, match="is not a rate"):
        parse_rate(text)


def limit(rate: str, burst: int | None = None, name: str = "l") -> Limit:
    return Limit.from_spec(name, RateLimitSpec(key="{client.ip}", rate=rate, burst=burst))


def test_a_bucket_lets_the_burst_through_then_the_rate() -> None:
    buckets, tenx = LocalBuckets(10), limit("10/s", burst=3)
    taken = [buckets.take([(tenx, "k")], now=100.0).allowed for _ in range(5)]
    assert taken == [True, True, True, False, False]
    assert buckets.take([(tenx, "k")], now=100.05).allowed is False  # half a token
    assert buckets.take([(tenx, "k")], now=100.1).allowed is True
    # a long pause refills to the burst, never beyond
    verdict = buckets.take([(tenx, "k")], now=1000.0)
    assert verdict.allowed and verdict.tokens == (2.0,)
    assert limit("100/m").capacity == 100 and limit("100/m", burst=20).capacity == 20
    assert (limit("100/m").quota, limit("100/m").window) == (100, 60)


def test_several_limits_take_from_all_or_from_none() -> None:
    buckets, wide, narrow = (
        LocalBuckets(10),
        limit("100/s", name="wide"),
        limit("1/s", burst=1, name="narrow"),
    )
    take = [(wide, "w"), (narrow, "n")]
    assert buckets.take(take, now=0.0).allowed
    refused = buckets.take(take, now=0.0)
    assert not refused.allowed
    assert refused.tokens == (99.0, 0.0), "the wide bucket gave nothing for a refused request"


def test_buckets_are_bounded_per_limit() -> None:
    buckets, one = LocalBuckets(3), limit("1/s", burst=1)
    for key in "abcde":
        buckets.take([(one, key)], now=0.0)
    assert buckets.held("l") == 3
    assert buckets.take([(one, "a")], now=0.0).allowed, "an evicted key starts again full"


def test_a_bucket_key_is_rendered_hashed_when_long_and_shared_when_missing() -> None:
    keyed = Limit.from_spec("k", RateLimitSpec(key="{header.x-tenant}", rate="1/s"))
    assert keyed.bucket({"header": {"x-tenant": "acme"}}) == "k:acme"
    assert keyed.bucket({"header": {}}) == "k:"
    long = keyed.bucket({"header": {"x-tenant": "t" * 1000}})
    assert long.startswith("k:sha256:") and len(long) < MAX_KEY_CHARS


@pytest.mark.parametrize(
    ("key", "sources"),
    [
        ("{auth.sub}", {"auth": {"sub": "7"}}),  # read straight from the source
        ("{auth.sub}", {"auth": {"sub": 7}}),  # a number, as the template writes it
        ("{auth.sub}", {"auth": {"sub": True}}),  # "true"
        ("{auth.sub}", {"auth": {"sub": None}}),  # no value: the shared bucket
        ("{auth.sub}", {"auth": {"sub": {"a": 1}}}),  # not a scalar: the shared bucket
        ("{auth.sub}", {"auth": {}}),
        ("{auth.sub}", {}),
        ("{header.x-tenant}", {"header": {"x-tenant": "acme"}}),
        ("{auth.claims.tenant}", {"auth": {"claims": {"tenant": "t1"}}}),
        ("ip-{client.ip}", {"client": {"ip": "10.0.0.1"}}),
        ("{header.x-tenant|default:anon}", {"header": {}}),
    ],
)
def test_a_bucket_key_is_what_its_template_renders(key: str, sources: Sources) -> None:
    keyed = Limit.from_spec("k", RateLimitSpec(key=key, rate="1/s"))
    try:
        rendered = render_text(parse_template(key), sources, str)
    except MissingValue:
        rendered = ""
    assert keyed.bucket(sources) == f"k:{rendered}"


@pytest.mark.parametrize(
    ("tokens", "value"),
    [
        ((3.0,), '"ten";r=3;t=0'),  # full
        ((2.0,), '"ten";r=2;t=1'),
        ((0.5,), '"ten";r=0;t=1'),  # half a token: none left, full in 0.25 s
        ((-1e-10,), '"ten";r=0;t=1'),  # a token taken from 0.9999999999
        ((2.0, 0.0), '"ten";r=2;t=1, "minute";r=0;t=12'),  # 20 at 100/m: 12 s
    ],
)
def test_the_ratelimit_header_counts_whole_requests_and_whole_seconds(
    tokens: tuple[float, ...], value: str
) -> None:
    limits = [limit("10/s", burst=3, name="ten"), limit("100/m", burst=20, name="minute")]
    assert ratelimit_value(ratelimit_heads(limits[: len(tokens)]), tokens) == value.encode()


def test_the_expiring_cache_forgets_the_expired_and_the_least_recently_used() -> None:
    cache: ExpiringCache[int] = ExpiringCache(2)
    cache.put("a", 1, expires=10)
    cache.put("b", 2, expires=10)
    assert cache.get("a", now=5) == 1  # a is now the most recently used
    cache.put("c", 3, expires=10)
    assert cache.get("b", now=5) is None and cache.get("a", now=5) == 1
    assert cache.get("a", now=10) is None and len(cache) == 1


def test_a_jwks_key_is_used_only_for_its_own_algorithm() -> None:
    rsa, ec = SigningKey.rsa("r"), SigningKey.ec("e")
    assert usable_key(rsa.jwk, "RS256") is not None
    assert usable_key(rsa.jwk, "PS256") is not None
    assert usable_key(rsa.jwk, "ES256") is None
    assert usable_key(rsa.jwk, "HS256") is None, "an RSA public key is never an HMAC secret"
    assert usable_key(ec.jwk, "ES256") is not None and usable_key(ec.jwk, "ES384") is None
    assert usable_key({**rsa.jwk, "alg": "RS512"}, "RS256") is None
    keys = parse_jwks(
        b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}, {"kty": "RSA", "use": "enc", "kid": "x"}]}'
    )
    assert keys == {}, "symmetric and encryption keys are never taken from a JWKS"


def test_api_keys_have_a_fixed_shape() -> None:
    key_id, key = new_key()
    assert parse_key(key) == key_id
    assert parse_key(key + "x") is None and parse_key("fo_zz_" + key[-43:]) is None


def test_the_auth_source_reads_claims_at_any_depth() -> None:
    (ref,) = parse_template("{auth.claims.org.id}").refs
    assert (ref.source, ref.key, ref.field) == ("auth", "claims", ("org", "id"))
