"""What one client connection may send, and how long it may take: the HTTP server's limits.

They are enforced by the gateway's protocol (gateway/server/protocol.py) while it parses, so
a request over a limit is answered (431, 408) before the app or any backend sees it. uvicorn
builds one protocol per connection from its `Config`; `LimitedConfig` is that config with
the limits on it (it pickles with them, so `--workers N` processes get the same limits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import uvicorn

from gateway.config.settings import Settings


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The limits of the table in docs/security.md (defaults as the settings')."""

    max_header_line_bytes: int = 8 * 1024
    """A request line (414) or one header line, name and value (431)."""
    max_header_bytes: int = 64 * 1024
    """The request line and every header line together (431)."""
    max_headers: int = 100
    """Header lines (431)."""
    header_timeout: float = 10.0
    """The whole head, from the connection's start or the end of the previous response (408)."""
    body_timeout: float = 30.0
    """The whole body, from the end of the head (408)."""
    buffer_body_bytes: int = 64 * 1024
    """A body up to this size is read whole before the app runs."""

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_line_bytes=settings.max_header_line_bytes,
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds,
            buffer_body_bytes=settings.buffer_body_bytes,
        )


DEFAULT_LIMITS = HttpLimits()


class LimitedConfig(uvicorn.Config):
    """uvicorn's Config, carrying the `HttpLimits` each connection's protocol enforces."""

    def __init__(self, app: Any, *, http_limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.http_limits = http_limits


def limits_of(config: uvicorn.Config) -> HttpLimits:
    """The limits a protocol built from `config` enforces (the defaults for a plain Config)."""
    return config.http_limits if isinstance(config, LimitedConfig) else DEFAULT_LIMITS
