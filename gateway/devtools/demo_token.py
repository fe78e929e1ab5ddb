"""Demo tokens: `python -m gateway.devtools.demo_token --sub 7` prints a bearer token that
the demo gateway (`gateway demo`) accepts.

The demo's jwt authenticator checks HS256 tokens against `JWT_SECRET`; unless that is set,
`gateway demo` makes a random secret once and keeps it in `.fanout/demo-jwt-secret`, which
this command reads too. A real deployment gets its tokens from its identity provider, with
`jwks_url`, never from here.
"""

from __future__ import annotations

import argparse
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

import jwt

from gateway.config.settings import Settings

SECRET_FILE = Path(__file__).resolve().parents[2] / ".fanout" / "demo-jwt-secret"
ISSUER = AUDIENCE = "fanout-demo"


def demo_secret() -> str:
    """JWT_SECRET when set, else the demo's own secret (made on first use)."""
    configured = Settings().jwt_secret
    if configured is not None:
        return configured
    if not SECRET_FILE.exists():
        SECRET_FILE.parent.mkdir(parents=True, exist_ok=True)
        SECRET_FILE.write_text(secrets.token_urlsafe(32), encoding="utf-8")
        SECRET_FILE.chmod(0o600)
    return SECRET_FILE.read_text(encoding="utf-8").strip()


def mint(sub: str, scopes: Sequence[str], ttl: float = 3600, secret: str | None = None) -> str:
    """An HS256 token for the demo's `users` authenticator."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "iat": now,
        "exp": now + int(ttl),
        "scope": " ".join(scopes),
    }
    return jwt.encode(claims, secret or demo_secret(), algorithm="HS256")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sub", default="7", help="the user id (default 7)")
    parser.add_argument("--scope", action="append", help="granted scopes (default profile:read)")
    parser.add_argument("--ttl", type=float, default=3600, help="seconds until it expires")
    args = parser.parse_args(argv)
    print(mint(args.sub, args.scope or ["profile:read"], args.ttl))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
