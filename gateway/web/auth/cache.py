"""A bounded cache whose entries expire: verified tokens and looked-up API keys.

Bounded by entries (`GATEWAY_AUTH_CACHE_ENTRIES`): past it the least recently used entry is
forgotten, so a client sending endless distinct credentials costs verifications, never
memory. Each entry carries its own expiry (a token's `exp`, a key's `cache`); an expired
entry is never returned.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class ExpiringCache(Generic[V]):
    """`get`/`put` by key with a per-entry expiry; at most `size` entries."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<ExpiringCache {len(self._entries)}/{self.size}>"

    def get(self, key: str, now: float) -> V | None:
        """The value stored under `key` unless it expired by `now` (then it is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if now >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: V, expires: float) -> None:
        """Store `value` until `expires`; the least recently used entry goes when full."""
        self._entries[key] = (expires, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
