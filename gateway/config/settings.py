"""Process settings, read from the environment once (prefix `GATEWAY_`).

The routes file says *what* the gateway serves; these say *how this process runs*: where it
binds, its limits and its shutdown timings. `DATABASE_URL` is read here and nowhere else.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    log_format: Literal["json", "text"] = Field(
        default="text",
        description="Log lines as JSON objects (the container image's default) or as text; "
        "both carry request_id and trace_id when there is one.",
    )
    access_log: bool = Field(
        default=False, description="One JSON line per request on stdout (gateway.access)."
    )
    access_log_queue: int = Field(
        default=10_000,
        ge=1,
        description="Access log lines waiting to be written; past it lines are dropped "
        "(counted in gateway_access_log_dropped_total).",
    )
    admin_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve /metrics, /readyz and /status on this port (same host) instead of "
        "the public one.",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="Traces are exported (OTLP over HTTP/protobuf) only when this is set; the "
        "other OTEL_* variables are read by the OpenTelemetry SDK itself.",
    )
    otel_bsp_max_queue_size: int = Field(
        default=2048,
        ge=1,
        validation_alias="OTEL_BSP_MAX_QUEUE_SIZE",
        description="Finished spans waiting for export; past it the oldest are dropped "
        "(gateway_trace_spans_dropped_total).",
    )
    sql_commenter: bool = Field(
        default=False,
        description="Append a sqlcommenter comment (traceparent) to traced SQL statements.",
    )
    prometheus_multiproc_dir: str | None = Field(
        default=None,
        validation_alias="PROMETHEUS_MULTIPROC_DIR",
        description="Where the workers of `--workers N` keep their metrics (set by "
        "`gateway run` to a fresh directory per run).",
    )
