"""HTTP backends through one shared aiohttp `ClientSession` per process.

aiohttp rather than httpx on the hot path: measured on this machine, a passthrough forwards
~9x the requests/s and a 3-way fan-out costs 1.01x a single call instead of 5.1x (httpx's
pool degrades past ~1,000 requests in flight, encode/httpx#3215).

Each backend gets an `HttpUpstream`: its base URLs in round-robin and a semaphore that caps its
calls in flight (`max_connections`). Since a connection is only opened when no idle one is
free, the cap also bounds the backend's sockets; excess calls wait, bounded by their timeout.
This is the only kind whose backends carry resilience settings of their own and serve
passthrough (`proxy:`) endpoints.

An answer is read as it arrives and counted after decompression: past `max_response` the
call fails having read at most that much (plus one decompressed chunk; aiohttp inflates in
steps of at most 256 KiB), so an endless body or a gzip bomb costs one bounded buffer.
Error messages name the backend; what names its address or URL goes into `details`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
import orjson
from multidict import CIMultiDict
from pydantic import ByteSize, Field, model_validator
from yarl import URL

from gateway.backends.freshness import freshness
from gateway.backends.live import LiveBackend, OpenContext
from gateway.config.models import BackendSpec, CallSpec, Problem, ResilienceSpec
from gateway.config.refs import RefScope
from gateway.config.values import BODYLESS_METHODS, HTTP_METHODS, BaseUrl
from gateway.engine.bodies import is_json
from gateway.engine.plan import CallTraits
from gateway.errors import BadBody, BadStatus, ResponseTooLarge, UpstreamUnavailable
from gateway.observability.tracing import outgoing_headers, tracing_enabled
from gateway.types import BackendRequest, BackendResponse, Call

log = logging.getLogger("gateway.http")


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Calls with these methods are idempotent unless they say otherwise (RFC 9110 9.2.2)."""


class HttpBackend(ResilienceSpec, BackendSpec):
    """An HTTP upstream: one base URL, or several used round-robin."""

    kind: Literal["http"]
    url: BaseUrl | None = None
    urls: list[BaseUrl] | None = Field(default=None, min_length=1)
    max_connections: int = Field(
        default=100, ge=1, description="Calls in flight to this backend; excess calls wait."
    )
    max_response: ByteSize = Field(
        default=ByteSize(8 * 1024 * 1024),
        gt=0,
        description="Largest answer an aggregation call reads, counted decompressed (e.g. "
        "'8MiB'); past it the call fails: response too large (502 when decisive).",
    )

    @model_validator(mode="after")
    def _one_of_url_or_urls(self) -> HttpBackend:
        if (self.url is None) == (self.urls is None):
            raise ValueError("give exactly one of `url` or `urls`")
        return self

    @property
    def base_urls(self) -> list[str]:
        return [self.url] if self.url is not None else list(self.urls or [])


_NO_CONTENT_TYPE: CIMultiDict[None] = CIMultiDict([("Content-Type", None)])


class GatewayRequest(aiohttp.ClientRequest):
    """aiohttp's request adding only its Accept and Accept-Encoding defaults (where the
    headers given lack them and the request does not skip them): never a User-Agent, never
    a Content-Type guessed for a body.

    What the session's `skip_auto_headers=("User-Agent", "Content-Type")` did, without its
    cost: with any skip list aiohttp builds a sorted multi-dict and a copy of the headers per
    request (py-spy: 6.8 of a passthrough's 232 CPU us)."""

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        skip = skip_auto_headers or ()
        headers = self.headers
        for name, value in self.DEFAULT_HEADERS.items():
            if name not in skip and name not in headers:
                headers[name] = value
        # read by aiohttp when it sets a body: no Content-Type of its own choosing
        self._skip_auto_headers = _NO_CONTENT_TYPE


def open_session() -> aiohttp.ClientSession:
    """The process's one client session; close it on shutdown."""
    connector = aiohttp.TCPConnector(
        # no cap of its own: each backend's semaphore (`max_connections`) caps its calls and
        # so its sockets, and backends come and go with reloads
        limit=0,
        limit_per_host=0,
        ttl_dns_cache=60,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        # one session serves every client: a shared cookie jar would leak one user's cookies
        # into another user's upstream requests
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Content-Type"),  # what GatewayRequest keeps to
        request_class=GatewayRequest,
        timeout=aiohttp.ClientTimeout(total=None),
    )


SESSION = "http.session"
"""The key of the app's one client session in `OpenContext.shared`."""


def client_session(context: OpenContext) -> aiohttp.ClientSession:
    """The app's one client session, opened by the first that needs it (the http backends,
    or JWKS fetching when there are none) and closed with the app."""
    session = context.shared.get(SESSION)
    if not isinstance(session, aiohttp.ClientSession):
        session = open_session()
        context.lifetime.push_async_callback(close_session, session)
        context.shared[SESSION] = session
    return session


async def close_session(session: aiohttp.ClientSession) -> None:
    """Close the session and its pooled connections (on shutdown, after in-flight calls)."""
    await session.close()
    log.info("HTTP client session closed")


URL_CACHE = 1024
"""Call URLs each upstream keeps built (`HttpUpstream.call_url`)."""
URL_CACHE_CHARS = 512
"""The longest path and query kept: a full cache holds well under a megabyte."""


@dataclass(slots=True)
class HttpUpstream:
    """One configured HTTP backend: where to send, and how many calls may be in flight."""

    name: str
    session: aiohttp.ClientSession
    base_urls: tuple[str, ...]
    slots: asyncio.Semaphore
    capacity: int
    max_response: int = 8 * 1024 * 1024
    _rotation: Iterator[str] = field(init=False)
    error_body_bytes: int = 64 * 1024
    """The largest 4xx JSON body kept for `pass_errors` (GATEWAY_ERROR_BODY_BYTES)."""
    _urls: dict[tuple[str, str, tuple[tuple[str, str], ...]], URL] = field(
        init=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        self._rotation = itertools.cycle(self.base_urls)

    @classmethod
    def from_spec(
        cls,
        name: str,
        spec: HttpBackend,
        session: aiohttp.ClientSession,
        error_body_bytes: int = 64 * 1024,
    ) -> HttpUpstream:
        return cls(
            name=name,
            session=session,
            base_urls=tuple(spec.base_urls),
            slots=asyncio.Semaphore(spec.max_connections),
            capacity=spec.max_connections,
            error_body_bytes=error_body_bytes,
            max_response=int(spec.max_response),
        )

    def __repr__(self) -> str:
        in_use = self.capacity - self.slots._value
        return f"<HttpUpstream {self.name} [{in_use}/{self.capacity} in flight]>"

    def usage(self) -> dict[str, int]:
        """Calls in flight against the cap (`max_connections`), for the status page."""
        return {"in_use": self.capacity - self.slots._value, "max": self.capacity}

    def url(self, encoded_path: str, query_string: str = "") -> URL:
        """The next base URL in rotation joined with an already percent-encoded path."""
        base = next(self._rotation)
        suffix = f"?{query_string}" if query_string else ""
        # encoded=True: the path was encoded segment by segment; yarl must not re-encode or
        # normalise it (that is how `%2F` would turn into `/`)
        return URL(base + encoded_path + suffix, encoded=True)

    def call_url(self, encoded_path: str, query: tuple[tuple[str, str], ...]) -> URL:
        """The next base URL in rotation with a call's path and query pairs (encoded here).

        Kept for the next call that asks the same: most calls ask the same path and query
        every time, and yarl's query encoding is ~1.5 us a call. Only short ones are kept,
        at most `URL_CACHE` (then the cache starts over), so client values in a query cost
        a bounded amount of memory."""
        base = next(self._rotation)
        key = (base, encoded_path, query)
        url = self._urls.get(key)
        if url is None:
            url = URL(base + encoded_path, encoded=True)
            if query:
                url = url.extend_query(query)
            if len(url.raw_path_qs) <= URL_CACHE_CHARS:
                if len(self._urls) >= URL_CACHE:
                    self._urls.clear()
                self._urls[key] = url
        return url


def http_call(upstream: HttpUpstream, traced: bool = False) -> Call:
    """A `Call` that sends a request to the upstream and decodes a 2xx JSON answer;
    `traced`: it carries the current span's `traceparent` (tracing on).

    A 4xx answer whose body is JSON keeps that body in its `BadStatus` (up to
    `upstream.error_body_bytes`), for `pass_errors`.
    """

    async def call(request: BackendRequest) -> BackendResponse:
        url = upstream.call_url(request.path, request.query)
        sent = [("Accept", "application/json"), *request.headers]
        if request.content_type is not None and not any(
            name.lower() == "content-type" for name, _ in request.headers
        ):
            sent.append(("Content-Type", request.content_type))
        if traced:
            sent.extend(outgoing_headers())
        slots = upstream.slots
        # a free slot is taken here, as `acquire` would take it, without the coroutine it
        # is (nor the generator its `locked()` makes on every call)
        if slots._value > 0 and not slots._waiters:
            slots._value -= 1
        else:
            await slots.acquire()
        try:
            try:
                async with upstream.session.request(
                    request.method,
                    url,
                    headers=sent,
                    data=request.body,
                    allow_redirects=False,  # a redirect could lead off the configured hosts
                    auto_decompress=True,
                ) as response:
                    status = response.status
                    if status < 200:  # 101: what follows is not an HTTP body
                        response.close()
                        raise BadStatus(f"{upstream.name} answered {status}", status=status)
                    data = await read_limited(response, upstream.max_response, upstream.name)
                    received = response.headers
                    content_type = received.get("Content-Type")
            except aiohttp.ClientConnectionError as exc:
                raise UpstreamUnavailable(
                    f"cannot reach {upstream.name}", details=str(exc)
                ) from exc
            except aiohttp.ClientPayloadError as exc:
                # the upstream died (or was cut off) in the middle of its body
                raise UpstreamUnavailable(
                    f"{upstream.name} broke off its answer", details=str(exc)
                ) from exc
            except aiohttp.ClientResponseError as exc:
                raise UpstreamUnavailable(
                    f"bad response from {upstream.name}", details=str(exc)
                ) from exc
        finally:
            slots.release()
        if not 200 <= status < 300:
            kept = (
                400 <= status < 500
                and is_json(content_type)
                and len(data) <= upstream.error_body_bytes
            )
            raise BadStatus(
                f"{upstream.name} answered {status}",
                status=status,
                body=data if kept else None,
                content_type=content_type if kept else None,
            )
        max_age, cacheable = freshness(
            received.get("Cache-Control"), received.get("Expires"), received.get("Date")
        )
        try:
            body = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            raise BadBody(
                f"{upstream.name} answered a body that is not JSON", status=status
            ) from None
        return BackendResponse(status, body, max_age, cacheable)

    return call


async def read_limited(response: aiohttp.ClientResponse, limit: int, name: str) -> bytes:
    """The whole body (decompressed), read as it arrives; ResponseTooLarge past `limit`."""
    declared = response.content_length
    if declared is not None and "Content-Encoding" not in response.headers:
        if declared > limit:
            response.close()
            raise ResponseTooLarge(f"response too large: {name} announced more than {limit} bytes")
        # what is read is what was announced, within the limit: read whole, without the
        # chunk loop below
        return await response.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            response.close()  # the connection's unread rest must not be reused
            # the traceback keeps this frame alive until the cycle collector runs: measured,
            # 3 bursts of 8 oversized answers then held ~200 MiB without this
            chunks.clear()
            raise ResponseTooLarge(f"response too large: {name} sent more than {limit} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class HttpKind:
    """`kind: http` (see gateway/backends/registry.py)."""

    name = "http"
    spec = HttpBackend
    passthrough = True
    call_fields = frozenset({"path", "query", "headers", "method", "body", "pass_errors"})

    def check(self, name: str, spec: HttpBackend) -> list[Problem]:
        return []

    def check_call(
        self, spec: HttpBackend, call: CallSpec, where: str, scope: RefScope
    ) -> list[Problem]:
        method = call.method.upper()
        if method not in HTTP_METHODS:
            expected = ", ".join(f"'{m}'" for m in HTTP_METHODS[:-1])
            return [(f"{where}.method", f"Input should be {expected} or '{HTTP_METHODS[-1]}'")]
        if call.body is not None and method in BODYLESS_METHODS:
            return [
                (
                    f"{where}.body",
                    f"a {method} call sends no body: give it `method: POST` (or PUT...)",
                )
            ]
        return []

    def traits(self, spec: HttpBackend, call: CallSpec) -> CallTraits:
        method = call.method.upper()  # case-insensitive in the file
        return CallTraits(
            method=method,
            idempotent_by_default=method in SAFE_METHODS,
            resilience=spec,
            attributes={"http.request.method": method, "url.template": call.path},
        )

    async def open(
        self, specs: Mapping[str, HttpBackend], context: OpenContext
    ) -> dict[str, LiveBackend]:
        session = client_session(context)
        traced = tracing_enabled(context.settings)
        live: dict[str, LiveBackend] = {}
        for name, spec in specs.items():
            upstream = HttpUpstream.from_spec(
                name, spec, session, context.settings.error_body_bytes
            )
            live[name] = LiveBackend(
                name=name,
                kind=self.name,
                call=http_call(upstream, traced),
                hosts=_host_calls(upstream, traced),
                passthrough=upstream,
                resilience=spec,
                usage=upstream.usage,
            )
        return live


def _host_calls(upstream: HttpUpstream, traced: bool) -> tuple[tuple[str, Call], ...]:
    """One Call per base URL, sharing the backend's cap on calls in flight."""
    if len(upstream.base_urls) == 1:
        return ((upstream.base_urls[0], http_call(upstream, traced)),)
    return tuple(
        (
            url,
            http_call(
                HttpUpstream(
                    name=upstream.name,
                    session=upstream.session,
                    base_urls=(url,),
                    slots=upstream.slots,
                    capacity=upstream.capacity,
                    error_body_bytes=upstream.error_body_bytes,
                    max_response=upstream.max_response,
                ),
                traced,
            ),
        )
        for url in upstream.base_urls
    )


KIND = HttpKind()
