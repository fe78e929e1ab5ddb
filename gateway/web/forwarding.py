"""Who the client is, and what upstreams are told about it: one rule for every route.

Forwarding headers (`X-Forwarded-For`, `-Proto`, `-Host`) are believed only when the peer
(the TCP address that connected) is a configured trusted proxy (`GATEWAY_TRUSTED_PROXIES`,
CIDRs; none by default). uvicorn's own proxy-header handling is off (gateway/server/serve.py),
so this is the only place that decides.

* The client's address (`{client.ip}`, rate-limit keys) is the peer, or, when the peer is
  trusted, the right-most address of `X-Forwarded-For` that is not itself a trusted proxy
  (the right-most entries are the ones our own proxies appended; anything left of the first
  untrusted hop could have been written by the client).
* Upstreams get `X-Forwarded-For` = the trusted chain + the peer (a client's own
  `X-Forwarded-For` is dropped when it connected directly: it is not appended to), and
  `X-Forwarded-Proto`/`-Host` from a trusted proxy, else our own scheme and Host. RFC 7239
  `Forwarded` and `X-Real-IP` are not forwarded: upstreams read the one set above.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDING_HEADERS = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip"}
)
"""Request headers the gateway sets itself; a client's values never pass through as sent."""


@dataclass(frozen=True, slots=True)
class Forwarding:
    """The trusted proxies of this process, and the rule built on them."""

    trusted: tuple[Network, ...] = ()

    def trusts(self, address: str | None) -> bool:
        """Whether `address` is a trusted proxy (an unparsable address never is)."""
        if address is None or not self.trusted:
            return False
        parsed = _address(address)
        return parsed is not None and any(parsed in network for network in self.trusted)

    def client_ip(self, peer: str | None, headers: Mapping[str, str]) -> str | None:
        """The client's address: the peer, or the first untrusted hop from the right."""
        if not self.trusts(peer):
            return peer
        for hop in reversed(_hops(headers.get("x-forwarded-for", ""))):
            if not self.trusts(hop):
                return hop if _address(hop) is not None else peer
        return peer

    def upstream_headers(
        self, peer: str | None, scheme: str, headers: Mapping[str, str]
    ) -> list[tuple[str, str]]:
        """The forwarding headers to send upstream for a request from `peer`."""
        trusted = self.trusts(peer)
        chain = _hops(headers.get("x-forwarded-for", "")) if trusted else []
        if peer is not None:
            chain.append(peer)
        out = [("X-Forwarded-For", ", ".join(chain))] if chain else []
        proto = headers.get("x-forwarded-proto") if trusted else None
        host = headers.get("x-forwarded-host") if trusted else None
        out.append(("X-Forwarded-Proto", proto or scheme))
        out.append(("X-Forwarded-Host", host or headers.get("host", "")))
        return out


def connection_named(raw_headers: Iterable[tuple[bytes, bytes]]) -> frozenset[str]:
    """The (lower-case) names a request's `Connection` header(s) list: hop-by-hop for this
    connection only, so never forwarded, whatever `forward_headers` says (RFC 9110 7.6.1)."""
    return frozenset(
        token.strip().lower()
        for name, value in raw_headers
        if name.lower() == b"connection"
        for token in value.decode("latin-1").split(",")
        if token.strip()
    )


def parse_trusted(values: Sequence[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) -> networks; ValueError naming a bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR") from None
    return tuple(networks)


def _hops(header: str) -> list[str]:
    return [hop.strip() for hop in header.split(",") if hop.strip()]


@lru_cache(maxsize=4096)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
