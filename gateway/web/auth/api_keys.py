"""API keys (`kind: api_key`): a key in a request header, looked up in the key store.

A lookup's answer, a key or "no such key", is remembered `cache` long (and at most
`GATEWAY_AUTH_CACHE_ENTRIES` of them), so a busy key costs one query per `cache` per
process, and a revoked key stops working within `cache`. A malformed key is refused without
a query. When the store cannot answer, a key already remembered keeps working; any other is
answered 503, not 401: the key may well be valid.
"""

from __future__ import annotations

import hmac
import time

from gateway.config.edge import ApiKeyAuth
from gateway.engine.context import RequestContext
from gateway.errors import Unauthorized
from gateway.web.auth.cache import ExpiringCache
from gateway.web.auth.keystore import KeyStore, digest, parse_key
from gateway.web.auth.step import Accepted, quoted

_REFUSED = Accepted({})
"""Remembered for a key the store does not know (or that is revoked)."""


class ApiKeyAuthenticator:
    """`auth.<name>: {kind: api_key, ...}`; one per configured authenticator."""

    def __init__(
        self,
        name: str,
        spec: ApiKeyAuth,
        *,
        store: KeyStore,
        cache: ExpiringCache[Accepted],
        max_bytes: int,
    ) -> None:
        self.name = name
        self.header = spec.header.lower()
        self.store = store
        self.cache = cache
        self.max_bytes = max_bytes
        self.cache_seconds = spec.cache

    def __repr__(self) -> str:
        return f"<ApiKeyAuthenticator {self.name} header={self.header} {self.cache!r}>"

    def challenge(self, error: Unauthorized | None) -> str:
        parts = [f"ApiKey realm={quoted(self.name)}", f'header="{self.header}"']
        if error is not None and error.error is not None:
            parts += [f'error="{error.error}"', f"error_description={quoted(str(error))}"]
        return ", ".join(parts)

    async def authenticate(self, context: RequestContext) -> Accepted | None:
        raw = context.headers.get(self.header)
        if raw is None:
            return None
        key = raw.strip()
        if len(key) > self.max_bytes:
            raise Unauthorized(f"the key is longer than {self.max_bytes} bytes")
        key_id = parse_key(key)
        if key_id is None:
            raise Unauthorized("not an API key of this gateway")
        hashed = digest(key)
        now = time.monotonic()
        accepted = self.cache.get(hashed, now)
        if accepted is None:
            accepted = await self._look_up(key_id, hashed)  # CallError: the store is down
            self.cache.put(hashed, accepted, now + self.cache_seconds)
        if accepted is _REFUSED:
            raise Unauthorized("unknown or revoked API key")
        return accepted

    async def _look_up(self, key_id: str, hashed: str) -> Accepted:
        stored = await self.store.find(key_id)
        # compared even for a revoked key, and in constant time: no timing tells which
        if stored is None or not hmac.compare_digest(stored.key_sha256, hashed) or stored.revoked:
            return _REFUSED
        return Accepted(
            {
                "sub": stored.name,
                "scopes": list(stored.scopes),
                "authenticator": self.name,
                "key": {"id": key_id, "name": stored.name, "metadata": dict(stored.metadata)},
            }
        )
