"""Structured logs: every line with its time, level, logger and message, and the request id
and trace id of the request that caused it, as JSON (`GATEWAY_LOG_FORMAT=json`, the container
image's default) or as text.

The ids come from a logging filter on the handler that reads the request's context variables
(the id the edge chose, the current span), so every logger gets them, uvicorn's included,
without any call site passing them. `logging_config` is the `dictConfig` uvicorn applies in
each (worker) process.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from gateway.observability.spans import current_span
from gateway.web.request_id import current_request_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(trace_id)s] %(message)s"


class RequestContextFilter(logging.Filter):
    """Adds `request_id` and `trace_id` ("-" outside a request or a span) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        context = current_span().get_span_context()
        record.trace_id = f"{context.trace_id:032x}" if context.is_valid else "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (RFC 3339, UTC, ms), level, logger, message, request_id,
    trace_id when known, and the traceback as `exc` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "-")
        if request_id != "-":
            line["request_id"] = request_id
        trace_id = getattr(record, "trace_id", "-")
        if trace_id != "-":
            line["trace_id"] = trace_id
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def _timestamp(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """uvicorn's and the gateway's loggers on one stderr handler, in `log_format`.

    Without the `gateway` logger here it would have no handler, and Python would print only
    its warnings: the drain and shutdown steps (which a pod's log should show) would be lost.
    """
    numeric = logging.getLevelName(level.upper())
    formatter: dict[str, Any] = (
        {"()": "gateway.observability.logging.JsonFormatter"}
        if log_format == "json"
        else {"format": TEXT_FORMAT}
    )
    logger = {"handlers": ["default"], "level": numeric, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request": {"()": "gateway.observability.logging.RequestContextFilter"}},
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["request"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": logger,
            "uvicorn.error": {"level": numeric},
            "uvicorn.access": logger,
            "gateway": logger,
            "opentelemetry": {**logger, "level": max(numeric, logging.WARNING)},
        },
    }
