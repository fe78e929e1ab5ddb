"""The value types of the config file: durations, shares, HTTP methods, base URLs, import paths.

Each is an `Annotated` type whose parser runs once, when the file is loaded; request handling
only ever sees the parsed value (seconds as a float, a share as a fraction). Parsers run in
time linear in their input, whatever a hostile file puts there.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field
from yarl import URL

HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
HTTP_METHODS: tuple[str, ...] = get_args(HttpMethod)
"""Every method an endpoint or an HTTP call may name, in the order the docs list them."""
BODYLESS_METHODS = frozenset({"GET", "HEAD"})
"""Requests the gateway neither reads a body of nor sends one with (RFC 9110 9.3.1-2: a body
there has no defined meaning, and some servers refuse it)."""

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers that describe one connection, never forwarded (RFC 9110 7.6.1)."""

HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
"""A header name: an RFC 9110 token."""
NOT_IN_HEADERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""Characters a header value cannot carry: controls but HTAB (RFC 9110 5.5); CR and LF
would end the header and start another (header injection)."""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m)?")
_MAX_VALUE_TEXT = 64  # no duration or share needs more; a longer one is refused unparsed
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}


def parse_duration(value: Any) -> Any:
    """`"250ms"`, `"2s"`, `"1m"` or a number of seconds -> seconds as a float."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '250ms' or '2s'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and len(value) <= _MAX_VALUE_TEXT:
        # strip first and match the rest whole: a pattern with `\s*` on both sides of an
        # optional unit backtracks quadratically on a long run of spaces
        match = _DURATION.fullmatch(value.strip())
        if match:
            number, unit = float(match.group(1)), match.group(2) or "s"
            return number * _UNITS[unit]
    shown = value if not isinstance(value, str) or len(value) <= _MAX_VALUE_TEXT else value[:20]
    raise ValueError(f"{shown!r} is not a duration (use e.g. '250ms', '2s' or a number of seconds)")


Duration = Annotated[
    float,
    BeforeValidator(parse_duration, json_schema_input_type=str | float),
    Field(gt=0),
]

Lapse = Annotated[
    float,
    BeforeValidator(parse_duration, json_schema_input_type=str | float),
    Field(ge=0),
]
"""A duration that may be zero (e.g. how long a stale answer may still be served)."""

UpperMethod = Annotated[
    HttpMethod,
    BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
]
"""An HTTP method, case-insensitive in the file, upper-case once loaded."""


def parse_share(value: Any) -> Any:
    """`"20%"` or a fraction like `0.2` -> 0.2 (a share of something, between 0 and 1)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        text = value.strip()[:-1]
        if len(text) <= _MAX_VALUE_TEXT:
            try:
                return float(text) / 100
            except ValueError:
                pass
        raise ValueError(f"{value[:_MAX_VALUE_TEXT]!r} is not a percentage like '20%'")
    return value


Share = Annotated[
    float, BeforeValidator(parse_share, json_schema_input_type=str | float), Field(ge=0, le=1)
]


def _check_base_url(url: str) -> str:
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
    if parsed.query_string or parsed.fragment:
        raise ValueError(f"{url!r} must not have a query or fragment")
    return url.rstrip("/")


BaseUrl = Annotated[str, BeforeValidator(lambda v: _check_base_url(v) if isinstance(v, str) else v)]

ImportPath = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description="`package.module:attribute`, importable by the gateway process.",
    ),
]
