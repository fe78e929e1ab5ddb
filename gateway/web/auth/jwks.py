"""The public keys of one jwt authenticator: a JWKS document from the IdP (or a file), cached.

* Fetched at start-up through the app's shared aiohttp session, each fetch bounded by
  `GATEWAY_JWKS_TIMEOUT_SECONDS` and `GATEWAY_JWKS_MAX_BYTES`.
* Kept `cache` long, then refreshed in the background: requests never wait for a refresh.
* A token naming an unknown `kid` (a key the IdP just rotated in) refetches at once, but at
  most once per `GATEWAY_JWKS_REFETCH_SECONDS` (30 s): a client inventing kids cannot make
  the gateway hammer the IdP. Concurrent requests share one fetch. A failed background
  refresh is tried again at most as often.
* When the IdP is down or answers garbage the keys already held keep working (however old),
  a new `kid` is a 401, and the failure is logged and counted, never a hang or a 500.

A key is used only for the algorithm its type allows (an RSA key for RS*/PS*, a P-256 key
for ES256...) and, when the JWK names its `alg`, for that algorithm only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from jwt import PyJWK
from jwt.exceptions import InvalidKeyError, PyJWKError

log = logging.getLogger("gateway.auth")

Loader = Callable[[], Awaitable[bytes]]
"""Reads the JWKS document once (an HTTP GET, a file read)."""

_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


class JwksError(Exception):
    """The JWKS document could not be had or is not a key set (the message says why)."""


def url_loader(session: aiohttp.ClientSession, url: str, timeout: float, max_bytes: int) -> Loader:
    """GET `url` through `session`: 200 and at most `max_bytes`, within `timeout` seconds."""

    async def load() -> bytes:
        try:
            async with session.get(
                url,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
                auto_decompress=True,
                headers={"Accept": "application/json"},
            ) as response:
                if response.status != 200:
                    raise JwksError(f"{url} answered {response.status}")
                if (response.content_length or 0) > max_bytes:
                    raise JwksError(f"{url}: larger than {max_bytes} bytes")
                body = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > max_bytes:
                        raise JwksError(f"{url}: larger than {max_bytes} bytes")
                return bytes(body)
        except TimeoutError:
            raise JwksError(f"{url} did not answer within {timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise JwksError(f"cannot fetch {url}: {exc}") from None

    return load


def file_loader(path: str, max_bytes: int) -> Loader:
    """Read the JWKS at `path` (a thread: a file on a network mount may block)."""

    def read() -> bytes:
        try:
            with Path(path).open("rb") as handle:
                body = handle.read(max_bytes + 1)
        except OSError as exc:
            raise JwksError(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(body) > max_bytes:
            raise JwksError(f"{path}: larger than {max_bytes} bytes")
        return body

    async def load() -> bytes:
        return await asyncio.to_thread(read)

    return load


def parse_jwks(body: bytes) -> dict[str | None, list[dict[str, Any]]]:
    """The signing keys of a JWKS document, by `kid` (None for keys without one)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise JwksError("the JWKS is not JSON") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise JwksError("the JWKS has no `keys` list")
    found: dict[str | None, list[dict[str, Any]]] = {}
    for jwk in keys:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        if jwk.get("kty") not in ("RSA", "EC", "OKP"):
            continue  # symmetric keys never come from a published key set
        kid = jwk.get("kid")
        found.setdefault(kid if isinstance(kid, str) else None, []).append(jwk)
    return found


def usable_key(jwk: dict[str, Any], algorithm: str) -> PyJWK | None:
    """The key for verifying `algorithm`, or None when this JWK may not be used for it."""
    named = jwk.get("alg")
    if named is not None and named != algorithm:
        return None
    kty = jwk.get("kty")
    if algorithm[:2] in ("RS", "PS"):
        fits = kty == "RSA"
    elif algorithm in _CURVES:
        fits = kty == "EC" and jwk.get("crv") == _CURVES[algorithm]
    elif algorithm == "EdDSA":
        fits = kty == "OKP"
    else:
        fits = False  # HS*: never with a published (public) key
    if not fits:
        return None
    try:
        return PyJWK(jwk, algorithm=algorithm)
    except (PyJWKError, InvalidKeyError, ValueError, TypeError):
        return None


class JwksKeys:
    """The cached key set of one authenticator (see the module docstring)."""

    def __init__(
        self,
        name: str,
        load: Loader,
        *,
        cache_seconds: float,
        refetch_seconds: float,
        on_fetch: Callable[[bool], None],
    ) -> None:
        self.name = name
        self._load = load
        self.cache_seconds = cache_seconds
        self.refetch_seconds = refetch_seconds
        self._on_fetch = on_fetch
        self._jwks: dict[str | None, list[dict[str, Any]]] = {}
        self._usable: dict[tuple[str | None, str], PyJWK | None] = {}
        self.fetched_at: float | None = None  # monotonic time of the last good fetch
        self._attempted = -float("inf")  # monotonic time of the last fetch attempt
        self._kid_fetched = -float("inf")  # ... and of the last one an unknown `kid` made
        self.last_error: str | None = None
        self._inflight: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<JwksKeys {self.name} kids={sorted(str(k) for k in self._jwks)}>"

    async def start(self) -> None:
        """The first fetch; a failure is logged and the authenticator starts without keys."""
        await self._fetch()

    async def close(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()

    async def key(self, kid: str | None, algorithm: str) -> PyJWK | None:
        """The key for a token's `kid` and `alg`, refetching once for an unknown `kid`."""
        now = time.monotonic()
        if self.fetched_at is None or now - self.fetched_at >= self.cache_seconds:
            self._refresh_in_background(now)
        found = self._find(kid, algorithm)
        if found is None and kid not in self._jwks and self._may_fetch(now):
            self._kid_fetched = now
            await self._fetch_shared()
            found = self._find(kid, algorithm)
        return found

    def report(self) -> dict[str, object]:
        """What /readyz shows of this key set."""
        age = None if self.fetched_at is None else round(time.monotonic() - self.fetched_at, 1)
        detail: dict[str, object] = {"keys": sum(map(len, self._jwks.values())), "age_s": age}
        if self.last_error is not None:
            detail["last_error"] = self.last_error
        return detail

    def _find(self, kid: str | None, algorithm: str) -> PyJWK | None:
        if kid is not None and kid not in self._jwks:
            return None  # not remembered: a client inventing kids must not grow `_usable`
        slot = (kid, algorithm)
        if slot not in self._usable:
            candidates = self._jwks.get(kid, [])
            if kid is None and not candidates and len(self._jwks) == 1:
                # a token without `kid` against a set of one key: that key
                candidates = next(iter(self._jwks.values()))
            keys = [k for k in (usable_key(jwk, algorithm) for jwk in candidates) if k]
            self._usable[slot] = keys[0] if keys else None
        return self._usable[slot]

    def _may_fetch(self, now: float) -> bool:
        return self._inflight is not None or now - self._kid_fetched >= self.refetch_seconds

    def _refresh_in_background(self, now: float) -> None:
        if self._inflight is None and now - self._attempted >= self.refetch_seconds:
            self._inflight = asyncio.create_task(self._fetch())

    async def _fetch_shared(self) -> None:
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._fetch())
        # shielded: a client that leaves must not cancel the fetch other requests wait for
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        self._attempted = time.monotonic()
        try:
            jwks = parse_jwks(await self._load())
        except JwksError as exc:
            self.last_error = str(exc)
            self._on_fetch(False)
            log.warning(
                "auth %s: JWKS fetch failed (%s); keeping the %d key(s) held",
                self.name,
                exc,
                sum(map(len, self._jwks.values())),
            )
        else:
            if jwks.keys() != self._jwks.keys():
                log.info("auth %s: JWKS has key ids %s", self.name, sorted(map(str, jwks)))
            self._jwks = jwks
            self._usable = {}
            self.fetched_at = time.monotonic()
            self.last_error = None
            self._on_fetch(True)
        finally:
            self._inflight = None
