"""JWT authentication end to end: a JWKS server written here (RS256 and ES256 keys made here),
a real gateway process fetching from it, the catalog service as the backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.guarded import Guarded, guarded_gateway, until
from tests.idp import AUDIENCE, ISSUER, Idp, SigningKey, forged, serving, valid_claims
from tests.processes import Running

CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}"}}
auth:
  users:
    kind: jwt
    jwks_url: {jwks}
    issuer: {issuer}
    audience: {audience}
    algorithms: [RS256, ES256]
    leeway: 5s
    cache: 10m
endpoints:
  - path: /me
    auth: {{use: users, scopes: [profile:read]}}
    calls:
      - name: seen
        backend: catalog
        path: /headers
        headers: {{x-user-id: "{{auth.sub}}", x-via: "{{auth.authenticator}}"}}
  - path: /tenant
    auth: {{use: users}}
    calls:
      - {{name: seen, backend: catalog, path: /headers, headers: {{x-tenant: "{{auth.claims.tenant}}"}}}}
  - path: /where
    auth: {{use: users}}
    calls:
      - {{name: at, backend: catalog, path: "/echo-path/users/{{auth.sub}}/orders"}}
  - path: /forwarded
    auth: {{use: users}}
    forward_headers: [authorization]
    calls:
      - {{name: seen, backend: catalog, path: /headers}}
  - path: /open
    calls:
      - {{name: seen, backend: catalog, path: /headers}}
  - path: /pass/{{rest:path}}
    auth: {{use: users}}
    proxy: {{backend: catalog, path: "/{{rest}}"}}
"""

RSA = SigningKey.rsa("rsa-1")
EC = SigningKey.ec("ec-1")


def config(catalog: Running, idp: Idp) -> str:
    return CONFIG.format(catalog=catalog.url, jwks=idp.url, issuer=ISSUER, audience=AUDIENCE)


@pytest.fixture(scope="module")
def idp() -> Iterator[Idp]:
    with serving(Idp([RSA, EC])) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(
    catalog: Running, idp: Idp, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Guarded]:
    with guarded_gateway(tmp_path_factory.mktemp("jwt"), config(catalog, idp)) as running:
        yield running


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def challenge_error(response: httpx.Response) -> str | None:
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="users"'), challenge
    for part in challenge.split(", "):
        if part.startswith("error="):
            return part.split("=", 1)[1].strip('"')
    return None


def test_valid_rs256_and_es256_tokens_reach_the_backend_with_their_claims(gateway: Guarded) -> None:
    for key in (RSA, EC):
        response = gateway.http.get("/me", headers=bearer(key.token(sub="user-42")))
        assert response.status_code == 200, response.text
        seen = response.json()
        assert seen["x-user-id"] == "user-42" and seen["x-via"] == "users"
        assert "authorization" not in seen, "the client's token must not reach the backend"
    at = gateway.http.get("/where", headers=bearer(RSA.token(sub="a b/c")))
    assert at.status_code == 200, at.text
    assert at.json()["raw_path"] == "/echo-path/users/a%20b%2Fc/orders"  # one encoded segment
    tenant = gateway.http.get("/tenant", headers=bearer(EC.token(tenant="acme")))
    assert tenant.json()["x-tenant"] == "acme"


def test_forward_headers_lists_authorization_to_pass_it_on(gateway: Guarded) -> None:
    token = RSA.token()
    seen = gateway.http.get("/forwarded", headers=bearer(token)).json()
    assert seen["authorization"] == f"Bearer {token}"
    passthrough = gateway.http.get("/pass/headers", headers=bearer(token))
    assert passthrough.status_code == 200
    assert "authorization" not in passthrough.json(), "a passthrough strips the credential too"


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (RSA.token(exp=1_000_000), "expired"),
        (RSA.token(nbf=4_000_000_000), "not valid yet"),
        (RSA.token(aud="another-app"), "another audience"),
        (RSA.token(iss="https://evil.test/"), "another issuer"),
        (RSA.token(exp=None), "no `exp`"),
        (SigningKey.rsa("rsa-1").token(), "signature"),  # same kid, another private key
        (forged({"alg": "none", "kid": "rsa-1"}, valid_claims(), None), "'none' is not accepted"),
        # algorithm confusion: HS256 with the RSA public key (which anyone has) as the secret
        (forged({"alg": "HS256", "kid": "rsa-1"}, valid_claims(), RSA.public_pem), "HS256"),
        ("not-a-jwt", "not a JWT"),
    ],
    ids=[
        "expired",
        "nbf",
        "audience",
        "issuer",
        "no-exp",
        "bad-signature",
        "none",
        "hs256-rsa",
        "garbage",
    ],
)
def test_a_token_that_does_not_verify_is_401_and_reaches_nothing(
    gateway: Guarded, token: str, why: str
) -> None:
    response = gateway.http.get("/me", headers=bearer(token))
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert why in response.json()["detail"]
    assert challenge_error(response) == "invalid_token"
    assert response.headers["x-request-id"]


def test_no_credential_is_401_without_an_error_code(gateway: Guarded) -> None:
    response = gateway.http.get("/me")
    assert response.status_code == 401
    assert challenge_error(response) is None  # RFC 6750 3.1: no error when none was sent
    other_scheme = gateway.http.get("/me", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert other_scheme.status_code == 401
    assert gateway.http.get("/open").status_code == 200


def test_a_missing_scope_or_claim_is_403(gateway: Guarded) -> None:
    no_scope = gateway.http.get("/me", headers=bearer(RSA.token(scope="orders:read")))
    assert no_scope.status_code == 403, no_scope.text
    assert 'error="insufficient_scope"' in no_scope.headers["www-authenticate"]
    assert 'scope="profile:read"' in no_scope.headers["www-authenticate"]
    scp_list = gateway.http.get("/me", headers=bearer(RSA.token(scope=None, scp=["profile:read"])))
    assert scp_list.status_code == 200
    no_claim = gateway.http.get("/tenant", headers=bearer(RSA.token()))
    assert no_claim.status_code == 403
    assert "tenant" in no_claim.json()["detail"]


def test_a_repeated_token_is_verified_once(gateway: Guarded) -> None:
    token = EC.token(sub="cached")
    before = gateway.metric("gateway_auth_cache_entries", authenticator="users")
    for _ in range(20):
        assert gateway.http.get("/me", headers=bearer(token)).status_code == 200
    assert gateway.metric("gateway_auth_cache_entries", authenticator="users") == before + 1


def test_unknown_kid_refetches_at_most_once_per_interval_then_rotation_works(
    catalog: Running, tmp_path: Path
) -> None:
    rotated = SigningKey.rsa("rsa-2")
    with (
        serving(Idp([RSA])) as idp,
        guarded_gateway(
            tmp_path, config(catalog, idp), env={"GATEWAY_JWKS_REFETCH_SECONDS": "2"}
        ) as gateway,
    ):
        assert idp.fetches == 1  # at start-up
        assert gateway.http.get("/me", headers=bearer(RSA.token())).status_code == 200
        token = rotated.token()
        first = gateway.http.get("/me", headers=bearer(token))
        assert first.status_code == 401 and "no key 'rsa-2'" in first.json()["detail"]
        fetched = idp.fetches
        assert fetched == 2, "an unknown kid refetches the JWKS"
        for _ in range(10):  # within the interval: refused without asking the IdP
            assert gateway.http.get("/me", headers=bearer(token)).status_code == 401
        assert idp.fetches == fetched
        idp.keys = [RSA, rotated]  # the IdP publishes the new key
        took = until(
            lambda: gateway.http.get("/me", headers=bearer(token)).status_code == 200,
            what="rotated key accepted",
        )
        assert idp.fetches <= fetched + 1 + int(took / 2), "at most one fetch per interval"
        assert gateway.http.get("/me", headers=bearer(RSA.token())).status_code == 200


def test_when_the_idp_is_down_cached_keys_work_and_a_new_kid_is_401(
    catalog: Running, tmp_path: Path
) -> None:
    with (
        serving(Idp([RSA])) as idp,
        guarded_gateway(
            tmp_path, config(catalog, idp), env={"GATEWAY_JWKS_REFETCH_SECONDS": "0"}
        ) as gateway,
    ):
        idp.mode = "down"
        assert gateway.http.get("/me", headers=bearer(RSA.token())).status_code == 200
        unknown = gateway.http.get("/me", headers=bearer(SigningKey.ec("ec-9").token()))
        assert unknown.status_code == 401
        assert gateway.metric("gateway_jwks_fetches_total", outcome="failed") >= 1
        idp.mode = "hang"  # an IdP that accepts and never answers: bounded by the timeout
        hung = gateway.http.get("/me", headers=bearer(SigningKey.ec("ec-8").token()))
        assert hung.status_code == 401
        assert gateway.http.get("/me", headers=bearer(RSA.token())).status_code == 200
        ready = gateway.http.get("/readyz").json()["checks"]["auth:users"]
        assert ready["ok"] and ready["keys"] == 1 and "last_error" in ready
    assert "JWKS fetch failed" in gateway.log()


def test_hostile_credentials_cost_bounded_memory(
    catalog: Running, idp: Idp, tmp_path: Path
) -> None:
    """Oversized tokens are refused unread; many distinct valid tokens are remembered up to
    GATEWAY_AUTH_CACHE_ENTRIES; an oversized JWKS is refused and the keys held are kept."""
    env = {"GATEWAY_AUTH_CACHE_ENTRIES": "50", "GATEWAY_AUTH_MAX_CREDENTIAL_BYTES": "4096"}
    with guarded_gateway(tmp_path, config(catalog, idp), env=env) as gateway:
        process = psutil.Process(gateway.running.process.pid)
        # over the credential limit, under the server's 8 KiB header line limit (431 there)
        huge = gateway.http.get("/me", headers=bearer("a." * 3_000 + "b"))
        assert huge.status_code == 401 and "longer than 4096 bytes" in huge.json()["detail"]
        assert 'error="invalid_request"' in huge.headers["www-authenticate"]
        baseline = process.memory_info().rss
        for index in range(300):
            token = RSA.token(sub=f"user-{index}")
            assert gateway.http.get("/me", headers=bearer(token)).status_code == 200
        assert gateway.metric("gateway_auth_cache_entries", authenticator="users") == 50
        assert process.memory_info().rss - baseline < 30 * 2**20


def test_an_oversized_jwks_is_refused(catalog: Running, tmp_path: Path) -> None:
    with (
        serving(Idp([RSA], mode="huge")) as idp,
        guarded_gateway(
            tmp_path, config(catalog, idp), env={"GATEWAY_JWKS_MAX_BYTES": "100000"}
        ) as gateway,
    ):
        assert len(idp.document()) > 100_000
        assert gateway.http.get("/me", headers=bearer(RSA.token())).status_code == 401
        assert gateway.metric("gateway_jwks_fetches_total", outcome="failed") >= 1
    assert "larger than 100000 bytes" in gateway.log()
