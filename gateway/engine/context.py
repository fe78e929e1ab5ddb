"""The request context: one immutable value per client request, built once at the web edge.

It holds what the client sent that templates may read (path parameters, query, headers, the
client's address) as named *sources*, plus the request id. Per-route steps (authentication,
body reading...) add sources by making a new context (`with_source`), so handlers and the
engine read one value and never the ASGI scope or a Starlette request. The body step also
keeps the client's bytes as they came (`raw_body`, for `body: forward` calls).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl

import orjson

from gateway.engine.templates import Sources
from gateway.types import record

ClientIp = Callable[[str | None, Mapping[str, str]], str | None]
"""(peer address, request headers) -> the client's address."""


@dataclass(frozen=True, slots=True)
class RawBody:
    """The client's request body exactly as it arrived (read whole, within `max_body`)."""

    data: bytes
    content_type: str | None
    """The client's Content-Type header as sent; None when it sent none."""

    def __repr__(self) -> str:
        return f"<RawBody {len(self.data)} bytes {self.content_type or 'untyped'}>"


def identity_digest(auth: Any) -> str:
    """`RequestContext.identity` of an `auth` source: "" for none, else a digest of it."""
    if not auth:
        return ""
    encoded = orjson.dumps(auth, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.blake2b(encoded, digest_size=16).hexdigest()


@record
class RequestContext:
    """What one request carries, by source name (see `gateway.engine.templates.SOURCES`)."""

    method: str
    request_id: str
    query_items: tuple[tuple[str, str], ...]
    """Every query pair in order, repeated names included (`forward_query` sends them all)."""
    sources: Sources
    """`path`, `query` (the last value of each name), `header` (lower-case names, the first
    value of each), `client` (`ip`), and whatever the endpoint's steps added."""
    raw_body: RawBody | None = None
    """The body's bytes, set by the body step of an endpoint that reads or forwards it."""
    auth_digest: str | None = None
    """`identity` as the auth step found it already computed (once per credential, not per
    request); None: computed from the `auth` source when asked."""

    def __repr__(self) -> str:
        return f"<RequestContext {self.method} {self.request_id} [{', '.join(self.sources)}]>"

    @property
    def path(self) -> Mapping[str, Any]:
        return self.sources["path"]  # type: ignore[no-any-return]

    @property
    def query(self) -> Mapping[str, str]:
        return self.sources["query"]  # type: ignore[no-any-return]

    @property
    def headers(self) -> Mapping[str, str]:
        return self.sources["header"]  # type: ignore[no-any-return]

    @property
    def identity(self) -> str:
        """Who the client authenticated as ("" when it did not): a digest of the `auth`
        source, so cached answers are kept per identity whatever an authenticator puts
        there."""
        if self.auth_digest is not None:
            return self.auth_digest
        return identity_digest(self.sources.get("auth"))

    def with_source(self, name: str, value: Any) -> RequestContext:
        """A copy with one more (or a replaced) source."""
        # the constructor, not dataclasses.replace: this runs per request and step, and
        # replace() introspects the fields each time (~2 us against ~1 us)
        return RequestContext(
            self.method,
            self.request_id,
            self.query_items,
            {**self.sources, name: value},
            self.raw_body,
            None if name == "auth" else self.auth_digest,
        )

    def with_auth(self, auth: Mapping[str, Any], digest: str) -> RequestContext:
        """A copy with the `auth` source and its `identity_digest`, computed by the caller
        once per credential."""
        return RequestContext(
            self.method,
            self.request_id,
            self.query_items,
            {**self.sources, "auth": auth},
            self.raw_body,
            digest,
        )

    def with_raw_body(self, body: RawBody) -> RequestContext:
        """A copy that carries the client's body bytes."""
        return replace(self, raw_body=body)

    @classmethod
    def from_scope(
        cls, scope: Mapping[str, Any], request_id: str, client_ip: ClientIp | None = None
    ) -> RequestContext:
        """Build the context from an ASGI HTTP scope (after routing: `path_params` is set).

        `client_ip(peer, headers)` says who the client is (the web layer's rule on trusted
        proxies); without it the client is the peer. One pass over the headers: building a
        dict through a case-insensitive multi-dict view costs a scan per name, which is
        quadratic in the number of headers.
        """
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            if name not in headers:
                headers[name] = raw_value.decode("latin-1")
        raw_query = scope.get("query_string", b"")
        query_items = (
            tuple(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True))
            if raw_query
            else ()
        )
        peer = scope["client"][0] if scope.get("client") else None
        ip = client_ip(peer, headers) if client_ip is not None else peer
        return cls(
            method=scope["method"],
            request_id=request_id,
            query_items=query_items,
            sources={
                "path": dict(scope.get("path_params", {})),
                "query": dict(query_items),
                "header": headers,
                "client": {"ip": ip} if ip is not None else {},
            },
        )
