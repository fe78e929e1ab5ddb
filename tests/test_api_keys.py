"""API keys end to end: `gateway keys create|list|revoke` against a real PostgreSQL, a real
gateway checking the keys, the catalog service as the backend."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from tests.guarded import guarded_gateway, until
from tests.processes import REPO, Running

CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}"}}
  db: {{kind: postgres, dsn: "{dsn}", pool: {{min: 0, max: 4}}}}
auth:
  {auth}: {{kind: api_key, header: x-api-key, store: db, cache: 1s}}
endpoints:
  - path: /partner
    auth: {{use: {auth}, scopes: [orders:read]}}
    calls:
      - name: seen
        backend: catalog
        path: /headers
        headers: {{x-key-name: "{{auth.key.name}}", x-tier: "{{auth.key.metadata.tier}}", x-sub: "{{auth.sub}}"}}
"""


def keys(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "keys", *args, "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stored_hashes(dsn: str, auth: str) -> list[str]:
    async def read() -> list[str]:
        connection = await asyncpg.connect(dsn)
        try:
            rows = await connection.fetch(
                "SELECT key_sha256 FROM fanout_api_keys WHERE authenticator = $1", auth
            )
        finally:
            await connection.close()
        return [row["key_sha256"] for row in rows]

    return asyncio.run(read())


def test_a_key_is_shown_once_stored_hashed_and_revoked_within_its_cache(
    catalog: Running, database_url: str, tmp_path: Path
) -> None:
    auth = f"partners_{int(time.time() * 1000) % 100000}"  # one test run's own keys
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(catalog=catalog.url, dsn=database_url, auth=auth))

    created = keys(
        config,
        "create",
        "--auth",
        auth,
        "--name",
        "acme",
        "--scope",
        "orders:read",
        "--meta",
        "tier=gold",
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("fo_") and len(key) > 40
    weak = keys(config, "create", "--auth", auth, "--name", "weak")  # no scope
    weak_key = weak.stdout.strip().splitlines()[-1]
    twice = keys(config, "create", "--auth", auth, "--name", "acme")
    assert twice.returncode == 1 and "exists" in twice.stderr

    listed = keys(config, "list", "--auth", auth)
    assert listed.returncode == 0 and "acme" in listed.stdout and "orders:read" in listed.stdout
    assert key not in listed.stdout, "the key is shown only at creation"
    hashes = stored_hashes(database_url, auth)
    assert len(hashes) == 2 and key not in hashes and all(len(h) == 64 for h in hashes)

    with guarded_gateway(tmp_path, config.read_text()) as gateway:
        accepted = gateway.http.get("/partner", headers={"x-api-key": key})
        assert accepted.status_code == 200, accepted.text
        seen = accepted.json()
        assert (seen["x-key-name"], seen["x-tier"], seen["x-sub"]) == ("acme", "gold", "acme")
        assert "x-api-key" not in seen, "the key is not forwarded"
        assert gateway.http.get("/partner", headers={"x-api-key": weak_key}).status_code == 403
        missing = gateway.http.get("/partner")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == f'ApiKey realm="{auth}", header="x-api-key"'
        forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
        assert gateway.http.get("/partner", headers={"x-api-key": forged}).status_code == 401
        malformed = gateway.http.get("/partner", headers={"x-api-key": "letmein"})
        assert malformed.status_code == 401 and "not an API key" in malformed.json()["detail"]

        revoked = keys(config, "revoke", "--auth", auth, "--name", "acme")
        assert revoked.returncode == 0, revoked.stderr
        took = until(
            lambda: gateway.http.get("/partner", headers={"x-api-key": key}).status_code == 401,
            what="revocation",
        )
        assert took < 1 + 5, f"a revoked key worked {took:.1f}s past revocation (cache: 1s)"
        assert gateway.metric("gateway_auth_requests_total", outcome="rejected") >= 3
    again = keys(config, "revoke", "--auth", auth, "--name", "acme")
    assert again.returncode == 1 and "no active key" in again.stderr
    wrong = keys(config, "list", "--auth", "nope")
    assert wrong.returncode == 1 and "not an api_key authenticator" in wrong.stderr


def test_a_key_store_that_cannot_answer_is_503_not_401(catalog: Running, tmp_path: Path) -> None:
    # a database nobody listens on: the gateway starts, lookups fail at once
    config = CONFIG.format(
        catalog=catalog.url, dsn="postgresql://postgres@127.0.0.1:9/none", auth="partners"
    )
    with guarded_gateway(tmp_path, config, probe="/livez") as gateway:
        key = "fo_0123456789ab_" + "A" * 43
        response = gateway.http.get("/partner", headers={"x-api-key": key})
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
