"""A local identity provider for the tests: keys made here, a JWKS served on 127.0.0.1, tokens.

`Idp` serves its key set at `/jwks.json` from a thread (a real HTTP server the gateway fetches
from through its own client), counts the fetches, and can be told to fail (503), to serve an
oversized document, or to hang until released. Keys are RS256 and ES256 pairs generated with
`cryptography`; tokens are signed with PyJWT, or by hand for the forged ones (`alg: none`,
HS256 signed with the RSA public key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.threaded_http import BackloggedServer

ISSUER = "https://idp.test/"
AUDIENCE = "shop-frontend"


@dataclass
class SigningKey:
    """A private key, its `kid` and algorithm, and its public JWK."""

    kid: str
    algorithm: str
    private: Any

    @classmethod
    def rsa(cls, kid: str) -> SigningKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    @property
    def jwk(self) -> dict[str, Any]:
        maker = RSAAlgorithm if self.algorithm.startswith("RS") else ECAlgorithm
        public: dict[str, Any] = maker.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig"}

    @property
    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def token(self, claims: dict[str, Any] | None = None, **overrides: Any) -> str:
        """A token signed with this key: valid claims unless `overrides` change them."""
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "7",
            "iat": now,
            "exp": now + 300,
            "scope": "profile:read",
            **(claims or {}),
        }
        payload.update(overrides)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(
            payload, self.private, algorithm=self.algorithm, headers={"kid": self.kid}
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token built by hand: unsigned (`hmac_key` None) or HMAC-SHA256 with any bytes."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if hmac_key is None:
        return signing_input + "."
    signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def valid_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "7", "exp": now + 300, "scope": "profile:read"}
    return {**claims, **overrides}


@dataclass
class Idp:
    """The JWKS server; `keys` is what it publishes (change it to rotate)."""

    keys: list[SigningKey]
    mode: str = "ok"  # ok | down (503) | huge (a document over any sane limit) | hang
    fetches: int = 0
    port: int = 0
    released: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def document(self) -> bytes:
        if self.mode == "huge":
            padding = [{"kty": "oct", "k": "x" * 1000, "kid": f"pad{i}"} for i in range(3000)]
            return json.dumps({"keys": [k.jwk for k in self.keys] + padding}).encode()
        return json.dumps({"keys": [k.jwk for k in self.keys]}).encode()


@contextmanager
def serving(idp: Idp) -> Iterator[Idp]:
    """Serve `idp` on an ephemeral 127.0.0.1 port until the block exits."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            idp.fetches += 1
            if idp.mode == "hang":
                idp.released.wait(30)
            if idp.mode == "down":
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = idp.document()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = BackloggedServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    idp.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield idp
    finally:
        idp.released.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
