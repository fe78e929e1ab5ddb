"""The inventory's blocking client library, as a legacy SDK would ship it: stdlib only.

Every method blocks its thread until the system answers (or `timeout` passes); that is why
the gateway runs it on a `legacy` backend's thread pool and never on the event loop.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode
from xml.etree import ElementTree


class InventoryError(Exception):
    """The inventory answered an error; `status` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"inventory answered {status}: {message}")
        self.status = status


class InventoryClient:
    """Stock levels from the inventory system. Thread-safe: it keeps no connection state."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # no proxies from the environment: the inventory is always reached directly
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self) -> str:
        return f"<InventoryClient {self.base_url}>"

    def stock_level(
        self, sku: str, delay: str | None = None, gate: str | None = None
    ) -> dict[str, Any]:
        """The stock record of `sku`: level, warehouse, restock_days (blocking)."""
        params = {"sku": sku, "delay": delay, "gate": gate}
        query = urlencode({k: v for k, v in params.items() if v is not None})
        root = self._request("GET", f"/stock?{query}")
        return {
            "sku": int(root.attrib["sku"]),
            "level": int(root.findtext("level", "0")),
            "warehouse": root.findtext("warehouse", ""),
            "restock_days": int(root.findtext("restock_days", "0")),
        }

    def open_gate(self, name: str) -> None:
        """Let every request waiting on gate `name` (and every later one) through."""
        self._request("POST", f"/gates/{quote(name, safe='')}/open")

    def _request(self, method: str, path: str) -> ElementTree.Element:
        request = urllib.request.Request(self.base_url + path, method=method, data=None)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                text = exc.read().decode("utf-8", "replace")
            raise InventoryError(exc.code, _message(text)) from None
        return ElementTree.fromstring(body)


def _message(text: str) -> str:
    try:
        return ElementTree.fromstring(text).attrib.get("message", text)
    except ElementTree.ParseError:
        return text
