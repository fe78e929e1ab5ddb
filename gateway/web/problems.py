"""RFC 9457 problem details: every error the gateway itself makes is application/problem+json."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"


def problem(
    status: int,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A problem+json response; `extra` adds members such as `failed_calls`."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (and any HTTPException) as problem+json."""
    assert isinstance(exc, HTTPException)
    detail = {
        404: f"no route for {request.url.path}",
        405: f"{request.method} is not allowed here",
    }.get(exc.status_code, str(exc.detail))
    return problem(exc.status_code, detail, headers=exc.headers)
