"""The inventory WSGI app: stock levels as XML, slow on purpose, with gates for tests.

* ``GET /stock?sku=N[&delay=250ms][&gate=NAME]``: ``<stock sku="N">`` with level, warehouse and
  restock days, deterministic per sku; 404 ``<error>`` for an unknown sku. Every answer takes
  the server's latency (or ``delay``). With ``gate``, the request then waits until
  ``POST /gates/NAME/open`` (at most ``MAX_GATE_SECONDS``, then 503), so tests decide exactly
  when a blocked legacy call returns.
* ``POST /gates/NAME/open``: open a gate: its waiting and future requests pass.
* ``GET /healthz``.

Blocking all the way down (``time.sleep``, ``threading.Event.wait``): that is the point.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape, quoteattr

from services.catalog import PRODUCT_COUNT, stable_int
from services.faults import FaultParameterError, parse_duration

MAX_GATE_SECONDS = 60.0
WAREHOUSES = ("DE-1", "DE-2", "FR-1", "IT-1", "US-1")
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def stock_xml(sku: int) -> str:
    """The stock record of a known sku, as the legacy system writes it."""
    level = stable_int("inventory.level", sku, 120)
    warehouse = WAREHOUSES[stable_int("inventory.warehouse", sku, len(WAREHOUSES))]
    restock = 0 if level else 1 + stable_int("inventory.restock", sku, 14)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<stock sku="{sku}"><level>{level}</level><warehouse>{warehouse}</warehouse>'
        f"<restock_days>{restock}</restock_days></stock>"
    )


class Gates:
    """Named one-shot gates: requests wait on one until a test opens it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[str, threading.Event] = {}

    def _get(self, name: str) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(name, threading.Event())

    def wait(self, name: str, timeout: float) -> bool:
        return self._get(name).wait(timeout)

    def open(self, name: str) -> None:
        self._get(name).set()


class Inventory:
    """The WSGI application; `latency` is added to every stock answer."""

    def __init__(self, latency: float = 0.05) -> None:
        self.latency = latency
        self.gates = Gates()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if method == "GET" and path == "/stock":
            status, body = self._stock(query)
        elif method == "POST" and path.startswith("/gates/") and path.endswith("/open"):
            self.gates.open(path[len("/gates/") : -len("/open")])
            status, body = "200 OK", "<ok/>"
        elif method == "GET" and path == "/healthz":
            status, body = "200 OK", "<ok/>"
        else:
            status, body = "404 Not Found", _error(f"no route for {method} {path}")
        data = body.encode()
        headers = [("Content-Type", "application/xml; charset=utf-8")]
        start_response(status, [*headers, ("Content-Length", str(len(data)))])
        return [data]

    def _stock(self, query: dict[str, str]) -> tuple[str, str]:
        raw = query.get("sku", "")
        if not (raw.isascii() and raw.isdigit()):
            return "400 Bad Request", _error("sku must be a number")
        try:
            delay = parse_duration(query["delay"]) if "delay" in query else self.latency
        except FaultParameterError as exc:
            return "400 Bad Request", _error(str(exc))
        time.sleep(delay)
        gate = query.get("gate")
        if gate and not self.gates.wait(gate, MAX_GATE_SECONDS):
            return "503 Service Unavailable", _error(f"gate {gate!r} was never opened")
        sku = int(raw)
        if not 1 <= sku <= PRODUCT_COUNT:
            return "404 Not Found", _error(f"unknown sku {sku}")
        return "200 OK", stock_xml(sku)


def _error(message: str) -> str:
    return f"<error message={quoteattr(message)}>{escape(message)}</error>"
