"""Process settings, read from the environment once (prefix `GATEWAY_`).

The routes file says *what* the gateway serves; these say *how this process runs*: where it
binds, its limits and its shutdown timings. The environment is read here and nowhere else
(`expansion_environment` hands it to the routes file's `${NAME}` values).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

EMBEDDED_DATABASE_URL = "postgresql://postgres@127.0.0.1:8104/postgres"
"""Where `gateway demo` runs its embedded PostgreSQL (see gateway/devtools/embedded_pg.py)."""


def expansion_environment() -> dict[str, str]:
    """What `${NAME}` in a routes file reads: the process environment, where an unset
    DATABASE_URL is the embedded demo database (so `dsn: ${DATABASE_URL}` always loads) and
    an unset REDIS_URL is empty (`cluster.redis: ${REDIS_URL}`: each process limits alone)."""
    return {"DATABASE_URL": EMBEDDED_DATABASE_URL, "REDIS_URL": "", **os.environ}


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
    cache_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Bytes of answers every call cache of the process keeps together; past "
        "it the largest cache evicts its least recently used (gateway_cache_evictions_total).",
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

    # --- facing frontends: authentication and rate limits (gateway/web/auth, web/ratelimit)
    jwt_secret: str | None = Field(
        default=None,
        validation_alias="JWT_SECRET",
        description="What `secret: ${JWT_SECRET}` of a jwt authenticator expands to.",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias="REDIS_URL",
        description="What `cluster.redis: ${REDIS_URL}` expands to; unset: no shared "
        "store, each process limits alone.",
    )
    auth_max_credential_bytes: int = Field(
        default=8192, ge=64, description="A longer token or API key is refused (401) unread."
    )
    auth_cache_entries: int = Field(
        default=10_000,
        ge=1,
        description="Verified tokens (and looked-up API keys) remembered per authenticator; "
        "past it the oldest is forgotten and verified again when it comes back.",
    )
    jwks_timeout_seconds: float = Field(
        default=2.0, gt=0, description="Bound on one JWKS fetch from the IdP."
    )
    jwks_refetch_seconds: float = Field(
        default=30.0, ge=0, description="An unknown `kid` refetches the JWKS at most this often."
    )
    jwks_max_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="A larger JWKS document is refused."
    )
    rate_limit_max_keys: int = Field(
        default=100_000,
        ge=1,
        description="Per-process buckets per limit; past it the least recently used is "
        "dropped (its key starts again with a full bucket).",
    )
    redis_timeout_seconds: float = Field(
        default=0.25, gt=0, description="Bound on connecting to Redis and on one take."
    )
    redis_max_connections: int = Field(
        default=64,
        ge=1,
        description="Connections to Redis; a take that finds none free in "
        "time is decided by this process alone.",
    )
    redis_retry_seconds: float = Field(
        default=5.0, gt=0, description="While Redis is unreachable, how often it is tried again."
    )
    background_calls: int = Field(
        default=1000,
        ge=0,
        description="Background calls (`background: true`) pending at once; a request whose "
        "background calls would go past it has them dropped (gateway_background_calls_total"
        "{outcome=dropped}).",
    )
    error_body_bytes: int = Field(
        default=64 * 1024,
        ge=0,
        description="Largest backend 4xx JSON body a `pass_errors` call passes to the client; "
        "a larger one: the status passes with the gateway's own problem+json.",
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
        "other OTEL_* variables are below, and the SDK reads OTEL_SERVICE_NAME, "
        "OTEL_RESOURCE_ATTRIBUTES and OTEL_TRACES_SAMPLER[_ARG].",
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
    watch: bool = Field(
        default=False,
        description="Reload when the routes file (or a file it includes) changes (`--watch`; "
        "for development: production reloads on SIGHUP).",
    )
    # The rest of the standard OTEL_* variables the span export reads (it is the gateway's
    # own, gateway/observability/otlp.py, not the SDK's); each *_TRACES_* one wins over the
    # general one, as the specification says. Durations are as the Python SDK reads them.
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        description="The full URL spans are POSTed to (default: "
        "$OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces).",
    )
    otel_exporter_otlp_headers: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_HEADERS",
        description="Headers of every export request: `key=value,key2=value2` (URL-encoded).",
    )
    otel_exporter_otlp_traces_headers: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_HEADERS"
    )
    otel_exporter_otlp_timeout: float | None = Field(
        default=None,
        gt=0,
        validation_alias="OTEL_EXPORTER_OTLP_TIMEOUT",
        description="Seconds an export request (its retries included) may take (default 10).",
    )
    otel_exporter_otlp_traces_timeout: float | None = Field(
        default=None, gt=0, validation_alias="OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
    )
    otel_exporter_otlp_compression: Literal["gzip", "deflate", "none"] | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_COMPRESSION",
        description="Compression of export requests (default none).",
    )
    otel_exporter_otlp_traces_compression: Literal["gzip", "deflate", "none"] | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"
    )
    otel_exporter_otlp_certificate: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_CERTIFICATE",
        description="CA certificate file that checks an https collector.",
    )
    otel_exporter_otlp_traces_certificate: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"
    )
    otel_exporter_otlp_client_certificate: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        description="Client certificate file for an https collector that asks for one (mTLS).",
    )
    otel_exporter_otlp_traces_client_certificate: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE"
    )
    otel_exporter_otlp_client_key: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_CLIENT_KEY",
        description="The client certificate's key file.",
    )
    otel_exporter_otlp_traces_client_key: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY"
    )
    otel_bsp_schedule_delay: float = Field(
        default=5000,
        ge=0,
        validation_alias="OTEL_BSP_SCHEDULE_DELAY",
        description="Milliseconds between exports (a full batch goes at once).",
    )
    otel_bsp_max_export_batch_size: int = Field(
        default=512,
        ge=1,
        validation_alias="OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        description="Spans per export request.",
    )
    otel_bsp_export_timeout: float = Field(
        default=30000,
        ge=0,
        validation_alias="OTEL_BSP_EXPORT_TIMEOUT",
        description="Milliseconds the export of the last spans may take at shutdown.",
    )
