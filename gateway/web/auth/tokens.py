"""Bearer JWTs (`kind: jwt`): checked once per token, then remembered until it expires.

A token is verified with PyJWT (signature, `exp` required, `nbf`, `iat`, the configured
`iss` and `aud`, `leeway` for clock skew), only for an `alg` the authenticator lists, with a
key chosen by the token's `kid` from the JWKS (gateway/web/auth/jwks.py) or the HS* secret.
`alg: none` never verifies, and an HS256 token cannot be checked against a published RSA key
(the key set holds only public keys, each usable for its own type's algorithms).

Verification is cached per token: an RS256 check costs 62-135 us of CPU here, a cached lookup
0.04-0.08 us (`python -m benchmarks.edge`), and a frontend sends the same token for its whole
lifetime. The cache is keyed by the `Authorization` value as sent, so a repeated token is
found before the header is even parsed, and it holds the identity as the auth step uses it
(`Accepted`: the source, its scope set and digest). An entry lives until
the token's `exp` (plus leeway) but never longer than the authenticator's `cache`, so a key
withdrawn from the JWKS stops vouching for its tokens within that time too. At most
`GATEWAY_AUTH_CACHE_ENTRIES` tokens are remembered per authenticator.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from jwt import PyJWK
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWTError,
)

from gateway.config.edge import JwtAuth
from gateway.engine.context import RequestContext
from gateway.errors import Unauthorized
from gateway.web.auth.cache import ExpiringCache
from gateway.web.auth.jwks import JwksKeys
from gateway.web.auth.step import Accepted, Identity, quoted


class JwtAuthenticator:
    """`auth.<name>: {kind: jwt, ...}`; one per configured authenticator."""

    header = "authorization"

    def __init__(
        self,
        name: str,
        spec: JwtAuth,
        *,
        keys: JwksKeys | None,
        secret: bytes | None,
        cache: ExpiringCache[Accepted],
        max_bytes: int,
    ) -> None:
        assert (keys is None) != (secret is None), "checked: one key source"
        self.name = name
        self.keys = keys
        self.secret = secret
        self.cache = cache
        self.max_bytes = max_bytes
        self.algorithms = frozenset(spec.algorithms)
        self.issuer = spec.issuer
        self.audience = spec.audience
        self.leeway = spec.leeway
        self.trust_seconds = spec.cache

    def __repr__(self) -> str:
        return f"<JwtAuthenticator {self.name} {sorted(self.algorithms)} {self.cache!r}>"

    def challenge(self, error: Unauthorized | None) -> str:
        parts = [f"Bearer realm={quoted(self.name)}"]
        if error is not None and error.error is not None:
            parts += [f'error="{error.error}"', f"error_description={quoted(str(error))}"]
        return ", ".join(parts)

    async def authenticate(self, context: RequestContext) -> Accepted | None:
        raw = context.headers.get("authorization")
        if raw is None:
            return None
        now = time.time()
        # only a header that passed every check below is ever stored under its value
        accepted = self.cache.get(raw, now)
        if accepted is not None:
            return accepted
        scheme, _, token = raw.partition(" ")
        if scheme.lower() != "bearer":
            return None  # another scheme: another authenticator's, perhaps
        token = token.strip()
        if not token:
            raise Unauthorized("the bearer token is empty", error="invalid_request")
        if len(token) > self.max_bytes:
            raise Unauthorized(
                f"the token is longer than {self.max_bytes} bytes", error="invalid_request"
            )
        claims = await self._verify(token)
        accepted = Accepted(self._identity(claims))
        expires = min(float(claims["exp"]) + self.leeway, now + self.trust_seconds)
        self.cache.put(raw, accepted, expires)
        return accepted

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except DecodeError:
            raise Unauthorized("the token is not a JWT") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise Unauthorized(f"the token's algorithm {algorithm!r} is not accepted")
        key: PyJWK | bytes
        if self.secret is not None:
            key = self.secret
        else:
            assert self.keys is not None
            kid = header.get("kid")
            if kid is not None and not isinstance(kid, str):
                raise Unauthorized("the token's `kid` is not a string")
            found = await self.keys.key(kid, algorithm)
            if found is None:
                raise Unauthorized(f"no key {kid!r} for {algorithm} is known")
            key = found
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={
                    "require": ["exp"],
                    "verify_aud": self.audience is not None,
                    "verify_iss": self.issuer is not None,
                },
            )
        except ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except ImmatureSignatureError:
            raise Unauthorized("the token is not valid yet") from None
        except InvalidAudienceError:
            raise Unauthorized("the token is for another audience") from None
        except InvalidIssuerError:
            raise Unauthorized("the token is from another issuer") from None
        except InvalidSignatureError:
            raise Unauthorized("the token's signature does not verify") from None
        except MissingRequiredClaimError as exc:
            raise Unauthorized(f"the token has no `{exc.claim}` claim") from None
        except PyJWTError as exc:
            raise Unauthorized(f"the token does not verify: {exc}") from None
        return claims

    def _identity(self, claims: dict[str, Any]) -> Identity:
        identity: Identity = {
            "claims": claims,
            "scopes": token_scopes(claims),
            "authenticator": self.name,
        }
        sub = claims.get("sub")
        if isinstance(sub, str | int) and not isinstance(sub, bool):
            identity["sub"] = str(sub)
        return identity


def token_scopes(claims: dict[str, Any]) -> list[str]:
    """Granted scopes: `scope` (space-separated, RFC 8693) or `scp` (a list or a string)."""
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            return value.split()
        if isinstance(value, list):
            return [s for s in value if isinstance(s, str)]
    return []
