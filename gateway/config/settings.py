"""Process settings, read from the environment once (prefix `GATEWAY_`).

The routes file says *what* the gateway serves; these say *how this process runs*: where it
binds, its limits and its shutdown timings. `DATABASE_URL` is read here and nowhere else.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

EMBEDDED_DATABASE_URL = "postgresql://postgres@127.0.0.1:8104/postgres"
"""Where `gateway demo` runs its embedded PostgreSQL (see gateway/devtools/embedded_pg.py)."""


class Settings(BaseSettings):
    """Every knob of the gateway process; all have production-minded defaults."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", frozen=True, extra="ignore")

    config: str | None = Field(
        default=None, description="Routes file (for `gateway run --workers N`)."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=0, description="Default request body limit."
    )
    max_in_flight: int = Field(
        default=12_000, ge=1, description="Requests in flight before new ones get a fast 503."
    )
    retry_after_seconds: int = Field(default=1, ge=0, description="Retry-After on shed requests.")
    backlog: int = Field(default=4096, ge=1, description="Listen backlog of the server socket.")
    keep_alive_seconds: float = Field(default=5.0, gt=0, description="Idle client keep-alive.")
    drain_seconds: float = Field(
        default=5.0, ge=0, description="After SIGTERM: /readyz is 503 but traffic is still served."
    )
    graceful_timeout_seconds: float = Field(
        default=20.0, ge=0, description="After draining: time for in-flight requests to finish."
    )
    log_level: str = "info"
    compute_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Worker processes of the shared compute pool (default: the CPU count).",
    )
    compute_queue: int = Field(
        default=64, ge=0, description="Compute calls waiting for a worker; beyond it 503."
    )
    loop_lag_interval_seconds: float = Field(
        default=0.02, gt=0, description="How often the event loop's lag is measured."
    )
    loop_lag_warn_seconds: float = Field(
        default=0.1, gt=0, description="Log a warning when the loop was blocked this long."
    )
    database_url: str = Field(
        default=EMBEDDED_DATABASE_URL,
        validation_alias="DATABASE_URL",
        description="What `${DATABASE_URL}` in a postgres backend's dsn expands to; unset: "
        "the embedded PostgreSQL that `gateway demo` starts.",
    )
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated CIDRs of the proxies in front of the gateway whose "
        "X-Forwarded-* headers are believed (none by default): see gateway/web/forwarding.py.",
    )

    max_header_line_bytes: int = Field(
        default=8 * 1024,
        ge=256,
        description="Longest request line or header line; past it 431, decided while parsing.",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Request line and all headers together; past it 431.",
    )
    max_headers: int = Field(default=100, ge=1, description="Header lines; past it 431.")
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="The whole request head must arrive within this, from the connection's "
        "start or the end of the previous response: 408 and close (a connection that sends "
        "nothing is closed).",
    )
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="The whole request body must arrive within this: 408."
    )
    buffer_body_bytes: int = Field(
        default=64 * 1024,
        ge=0,
        description="A request body up to this size is read whole before the app runs (so "
        "before any backend slot or connection is taken); larger ones are streamed.",
    )
    memory_trim_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How often to check whether freed memory can go back to the system "
        "(gc + malloc_trim after the process grew 16 MiB; gateway/observability/memory.py); "
        "0 turns it off.",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _cidrs(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP address or CIDR") from None
        return value
