"""Liveness and readiness.

/livez answers while the process can serve at all and never touches a backend or the
database, so a slow dependency never gets the pod killed. /readyz says whether to send
traffic: 503 while starting, while any readiness check fails, and from the moment draining
begins (SIGTERM), so load balancers stop routing here before the listener closes.
"""

from __future__ import annotations

import time
from typing import Literal

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.types import ReadinessCheck

State = Literal["starting", "ready", "draining"]


class Health:
    """The process's lifecycle state, and the readiness checks backends register."""

    def __init__(self) -> None:
        self._state: State = "starting"
        self.checks: dict[str, ReadinessCheck] = {}
        self.draining_since: float | None = None
        """When draining began (`time.monotonic()`): shutdown budgets count from it."""

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, value: State) -> None:
        if value == "draining" and self.draining_since is None:
            self.draining_since = time.monotonic()
        self._state = value

    def __repr__(self) -> str:
        return f"<Health {self.state} checks={sorted(self.checks)}>"

    async def livez(self, request: Request) -> Response:
        return _json({"status": "alive"}, 200)

    async def readyz(self, request: Request) -> Response:
        report: dict[str, object] = {}
        ready = self.state == "ready"
        for name, check in self.checks.items():
            try:
                report[name] = {"ok": True, **await check()}
            except Exception as exc:  # a failing check means "not ready", whatever it raised
                ready = False
                report[name] = {"ok": False, "error": str(exc) or type(exc).__name__}
        status = "ready" if ready else self.state if self.state != "ready" else "degraded"
        return _json({"status": status, "checks": report}, 200 if ready else 503)


def _json(body: dict[str, object], status: int) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")
