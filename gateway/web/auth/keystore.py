"""API keys in PostgreSQL: the table the gateway creates, and `gateway keys create|list|revoke`.

A key reads `fo_<id>_<secret>`: `id` (12 hex digits) finds the row, `secret` (32 random
bytes, URL-safe base64) is what makes it a key. Only the SHA-256 of the whole key is stored,
never the key: it is shown once, by `gateway keys create`. A fast hash is enough here (not
bcrypt): the secret is 256 random bits, so there is nothing to brute-force from a leaked
table. The stored hash is compared with `hmac.compare_digest`, in constant time.

Every statement runs through the store backend's own `Call` (the one its SQL calls use), so
keys live in the database the config already names, with its pool and its limits.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
from prometheus_client import CollectorRegistry

from gateway.backends.live import OpenContext
from gateway.backends.registry import open_backends
from gateway.config.document import GatewaySpec
from gateway.config.edge import ApiKeyAuth
from gateway.config.settings import Settings
from gateway.errors import CallError, ConfigError, QueryFailed, UpstreamUnavailable
from gateway.types import JSON, BackendRequest, Call

TABLE = "fanout_api_keys"
_KEY = re.compile(r"fo_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")

_CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id            text PRIMARY KEY,
    authenticator text NOT NULL,
    name          text NOT NULL,
    key_sha256    text NOT NULL,
    scopes        text[] NOT NULL DEFAULT '{{}}',
    metadata      jsonb NOT NULL DEFAULT '{{}}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
)"""
_CREATE_INDEX = f"""
CREATE UNIQUE INDEX IF NOT EXISTS {TABLE}_active_name
ON {TABLE} (authenticator, name) WHERE revoked_at IS NULL"""
_FIND = f"""
SELECT name, key_sha256, scopes, metadata::text AS metadata, revoked_at IS NOT NULL AS revoked
FROM {TABLE} WHERE id = $1 AND authenticator = $2"""
_INSERT = f"""
INSERT INTO {TABLE} (id, authenticator, name, key_sha256, scopes, metadata)
VALUES ($1, $2, $3, $4, $5, $6::jsonb)"""
_LIST = f"""
SELECT id, name, scopes, metadata::text AS metadata, created_at, revoked_at
FROM {TABLE} WHERE authenticator = $1 ORDER BY created_at, id"""
_REVOKE = f"""
UPDATE {TABLE} SET revoked_at = now()
WHERE authenticator = $1 AND name = $2 AND revoked_at IS NULL RETURNING id"""


def new_key() -> tuple[str, str]:
    """(id, key) of a fresh random key."""
    key_id = secrets.token_hex(6)
    return key_id, f"fo_{key_id}_{secrets.token_urlsafe(32)}"


def parse_key(text: str) -> str | None:
    """The id of a well-formed key, else None (then no database lookup is made)."""
    match = _KEY.fullmatch(text)
    return match.group(1) if match else None


def digest(key: str) -> str:
    """What is stored of a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode("ascii", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredKey:
    """One row, as a lookup sees it."""

    name: str
    key_sha256: str
    scopes: tuple[str, ...]
    metadata: Mapping[str, Any]
    revoked: bool


class KeyStore:
    """The keys of one api_key authenticator, in its store backend (through `call`)."""

    def __init__(self, authenticator: str, call: Call, timeout: float) -> None:
        self.authenticator = authenticator
        self.call = call
        self.timeout = timeout
        self.ready = False

    def __repr__(self) -> str:
        return f"<KeyStore {self.authenticator} {'ready' if self.ready else 'not ready'}>"

    async def _run(self, sql: str, *params: Any) -> JSON:
        request = BackendRequest(args={"sql": sql, "params": list(params), "result": "many"})
        try:
            async with asyncio.timeout(self.timeout):
                return (await self.call(request)).body
        except TimeoutError:
            raise UpstreamUnavailable(
                f"the key store did not answer in {self.timeout:g}s"
            ) from None

    async def ensure_table(self) -> None:
        """Create the table and its index unless they exist (any number of processes)."""
        for statement in (_CREATE_TABLE, _CREATE_INDEX):
            try:
                await self._run(statement)
            except QueryFailed:
                # two processes creating it at once: one loses a catalog race; it exists now
                await self._run(statement)
        self.ready = True

    async def find(self, key_id: str) -> StoredKey | None:
        """The row of `key_id` for this authenticator, or None."""
        if not self.ready:
            await self.ensure_table()
        rows = await self._run(_FIND, key_id, self.authenticator)
        if not rows:
            return None
        row = rows[0]
        return StoredKey(
            name=row["name"],
            key_sha256=row["key_sha256"],
            scopes=tuple(row["scopes"] or ()),
            metadata=orjson.loads(row["metadata"]),
            revoked=row["revoked"],
        )

    async def create(self, name: str, scopes: Sequence[str], metadata: Mapping[str, str]) -> str:
        """A new key named `name`; the key itself is returned once and never stored."""
        await self.ensure_table()
        key_id, key = new_key()
        try:
            await self._run(
                _INSERT,
                key_id,
                self.authenticator,
                name,
                digest(key),
                list(scopes),
                orjson.dumps(dict(metadata)).decode(),
            )
        except QueryFailed as exc:
            if "23505" in str(exc):  # unique_violation: an active key has that name
                raise ValueError(f"a key named {name!r} exists: revoke it first") from None
            raise
        return key

    async def list(self) -> list[dict[str, Any]]:
        await self.ensure_table()
        rows: list[dict[str, Any]] = await self._run(_LIST, self.authenticator)
        return rows

    async def revoke(self, name: str) -> int:
        """Revoke the active key named `name`; how many were revoked (0 or 1)."""
        await self.ensure_table()
        return len(await self._run(_REVOKE, self.authenticator, name))


def key_store_spec(spec: GatewaySpec, auth: str) -> ApiKeyAuth:
    """The api_key authenticator `auth` of a checked spec, or ConfigError naming the choices."""
    found = spec.auth.get(auth)
    if not isinstance(found, ApiKeyAuth):
        names = ", ".join(n for n, a in spec.auth.items() if isinstance(a, ApiKeyAuth)) or "none"
        raise ConfigError([f"--auth {auth}: not an api_key authenticator (api_key ones: {names})"])
    return found


async def manage_keys(
    spec: GatewaySpec,
    settings: Settings,
    auth: str,
    action: str,
    *,
    name: str | None = None,
    scopes: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """`gateway keys create|list|revoke`: one action on the keys of authenticator `auth`."""
    api_key = key_store_spec(spec, auth)
    backend = spec.backends[api_key.store]
    async with AsyncExitStack() as stack:
        context = OpenContext(stack, settings, CollectorRegistry())
        live = await open_backends({api_key.store: backend}, context)
        store = KeyStore(auth, live[api_key.store].call, backend.timeout)
        try:
            if action == "create":
                assert name is not None, "the command requires --name"
                key = await store.create(name, scopes, metadata or {})
                print(f"created key {name!r} for {auth}; it is shown only now:", file=out)
                print(key, file=out)
            elif action == "list":
                rows = await store.list()
                print("id\tname\tscopes\tmetadata\tcreated\trevoked", file=out)
                for row in rows:
                    cells = [row["id"], row["name"], " ".join(row["scopes"] or ()) or "-"]
                    cells += [row["metadata"], row["created_at"], row["revoked_at"] or "-"]
                    print("\t".join(str(c) for c in cells), file=out)
            else:
                assert name is not None, "the command requires --name"
                if await store.revoke(name) == 0:
                    print(f"keys: no active key named {name!r} for {auth}", file=sys.stderr)
                    return 1
                print(
                    f"revoked key {name!r} of {auth}: refused within its cache time "
                    f"({api_key.cache:g}s)",
                    file=out,
                )
        except ValueError as exc:
            print(f"keys: {exc}", file=sys.stderr)
            return 1
        except CallError as exc:
            print(f"keys: {api_key.store}: {exc}", file=sys.stderr)
            return 1
    return 0
