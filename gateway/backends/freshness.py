"""How long an HTTP answer may be reused, as its upstream says (RFC 9111, the parts a gateway
caching on behalf of many clients needs): `no-store` and `private` forbid keeping it,
`s-maxage` then `max-age` give its lifetime, else `Expires` (relative to `Date` when sent).
`no-cache` means "revalidate every time", which without revalidation is: do not reuse."""

from __future__ import annotations

from email.utils import parsedate_to_datetime


def freshness(
    cache_control: str | None, expires: str | None, date: str | None
) -> tuple[float | None, bool]:
    """(seconds the answer stays fresh or None if unsaid, whether it may be kept at all)."""
    if not cache_control and not expires:
        return None, True  # most answers say nothing: the fast path of every HTTP call
    directives: dict[str, str] = {}
    for part in (cache_control or "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip().strip('"')
    if {"no-store", "private", "no-cache"} & directives.keys():
        return None, False
    for name in ("s-maxage", "max-age"):
        seconds = directives.get(name)
        if seconds is not None:
            return (float(seconds), True) if seconds.isdigit() else (None, False)
    if expires is None:
        return None, True
    try:
        until = parsedate_to_datetime(expires)
        sent = parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError, IndexError):
        return None, False  # an invalid Expires means "already expired" (RFC 9111 5.3)
    if sent is None or until.tzinfo is None or sent.tzinfo is None:
        return None, True
    return max(0.0, (until - sent).total_seconds()), True
