"""X-Request-ID: kept from the client when well-formed, generated otherwise, returned on every
answer, and visible to every layer through a context variable (logs, backend calls, threads)."""

from __future__ import annotations

import os
import re
from contextvars import ContextVar

HEADER = "x-request-id"
_WELL_FORMED = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

current_request_id: ContextVar[str] = ContextVar("current_request_id", default="-")


def choose_request_id(received: str | None) -> str:
    """The client's id when it is safe to echo and log, else a fresh one."""
    if received is not None and _WELL_FORMED.match(received):
        return received
    # 128 random bits as 32 hex digits, as uuid4().hex was: 0.3 us instead of 1.8 us (a UUID
    # object built and formatted per request)
    return os.urandom(16).hex()
