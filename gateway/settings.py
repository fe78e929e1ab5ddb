"""Process settings, read from the environment once (prefix `GATEWAY_`).

The routes file says *what* the gateway serves; these say *how this process runs*: where it
binds, its limits and its shutdown timings. `DATABASE_URL` is read here and nowhere else.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
