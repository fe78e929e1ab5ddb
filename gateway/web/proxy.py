"""Passthrough routes: method, body, status and headers passed both ways, bodies streamed
(a small request body arrives whole, gateway/web/upload.py); never decompressed, and the
client's Accept-Encoding exactly as it sent it (none when it sent none).

Path values are taken from the *raw* request path, segment by segment: each segment is
decoded, refused if it is `.` or `..` (after decoding, so `%2e%2e` counts), and re-encoded as
one segment, so `..%2F` or an encoded slash can never move the request to another upstream
path. Hop-by-hop headers (and those named in `Connection`) are dropped in both directions.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable
from urllib.parse import quote, unquote

import aiohttp
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.backends.live import Passthrough
from gateway.config.models import ProxySpec
from gateway.config.values import HOP_BY_HOP
from gateway.engine.plan import SEGMENT_SAFE, has_dot_segment
from gateway.engine.templates import Template, parse_template, render_text
from gateway.errors import BodyTooLarge
from gateway.observability.tracing import traceparent
from gateway.timers import Timeouts
from gateway.web.forwarding import FORWARDING_HEADERS, Forwarding
from gateway.web.problems import problem
from gateway.web.request_id import current_request_id
from gateway.web.upload import upstream_body

log = logging.getLogger("gateway.proxy")

# uvicorn writes its own Date and Server headers; upstream copies would be duplicates
_REPLACED_BY_SERVER = frozenset({"date", "server"})
CHUNK = 64 * 1024
_NOT_ADDED = ("Accept", "Accept-Encoding")


def raw_path_pattern(route_path: str) -> re.Pattern[str]:
    """A regex over the raw (still percent-encoded) path with one group per path parameter."""
    out, pos = [], 0
    for match in re.finditer(r"\{([^{}:]+)(?::([^{}]+))?\}", route_path):
        out.append(re.escape(route_path[pos : match.start()]))
        name, convertor = match.group(1), match.group(2)
        out.append(f"(?P<{name}>.*)" if convertor == "path" else f"(?P<{name}>[^/]+)")
        pos = match.end()
    out.append(re.escape(route_path[pos:]))
    return re.compile("^" + "".join(out) + "$")


_PLAIN = re.compile(r"[A-Za-z0-9_.~!$&'()*+,;=:@/-]*")
"""A raw path value with nothing to decode or encode: unreserved characters, sub-delims, `:`,
`@` and `/` (no `%`, no `\\`). Such a value re-encodes to itself."""


def reencode(raw_value: str) -> str | None:
    """Re-encode a raw path value segment by segment; None if any segment could climb."""
    if _PLAIN.fullmatch(raw_value):
        # the common case, without an unquote and a quote per segment (~1.5 us a segment);
        # a dot segment has a dot
        return None if "." in raw_value and has_dot_segment(raw_value) else raw_value
    return reencode_segments(raw_value)


def reencode_segments(raw_value: str) -> str | None:
    """`reencode` the long way: each segment decoded, checked and encoded again."""
    segments = []
    for raw_segment in raw_value.split("/"):
        decoded = unquote(raw_segment)
        if has_dot_segment(decoded):
            return None
        segments.append(quote(decoded, safe=SEGMENT_SAFE))
    return "/".join(segments)


_NOT_PASSED_UP = frozenset(
    name.encode() for name in (*HOP_BY_HOP, *FORWARDING_HEADERS, "host", "x-request-id")
)
"""Client headers a passthrough never sends as they came: hop-by-hop ones, and those the
gateway sets itself (the forwarding headers, Host, X-Request-ID)."""
_NOT_PASSED_DOWN = frozenset(name.encode() for name in (*HOP_BY_HOP, *_REPLACED_BY_SERVER))

_READ = {
    name.encode(): name
    for name in (
        "connection",
        "content-length",
        "expect",
        "host",
        "transfer-encoding",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
    )
}
"""The client headers a passthrough itself reads (its body framing and limit, `Expect`,
`Connection`, what the forwarding headers are made of), by raw name."""


def _named_by_connection(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The (lower-case) names the Connection header(s) among `headers` list."""
    return frozenset(
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    )


def upstream_request_headers(
    raw: Iterable[tuple[bytes, bytes]],
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The client's headers a passthrough sends upstream, in their order, and the first
    value of each header it reads itself (`_READ`, by lower-case name, as a request
    context's `headers` has them): one pass over the raw ASGI headers, no multi-dict, no
    decoding of what is neither sent nor read."""
    sent: list[tuple[str, str]] = []
    read: dict[str, str] = {}
    for name, value in raw:
        lower = name.lower()
        key = _READ.get(lower)
        if key is not None and key not in read:
            read[key] = value.decode("latin-1")
        if lower not in _NOT_PASSED_UP:
            sent.append((name.decode("latin-1"), value.decode("latin-1")))
    if "connection" in read:  # rare: the pass again, without the names it lists
        named = _named_by_connection(raw)
        sent = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in raw
            if (lower := name.lower()) not in _NOT_PASSED_UP and lower not in named
        ]
    return sent, read


def client_answer_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's headers (as received, bytes) a passthrough answers with: not the
    hop-by-hop ones nor those the Connection header names, not Date or Server (the server
    writes its own). Names lower-case, as the server writes them anyway."""
    kept: list[tuple[bytes, bytes]] = []
    connection = False
    for name, value in raw:
        lower = name.lower()
        if lower in _NOT_PASSED_DOWN:
            connection = connection or lower == b"connection"
        else:
            kept.append((lower, value))
    if connection:  # rare: without the names it lists too
        named = _named_by_connection(raw)
        kept = [(name, value) for name, value in kept if name not in named]
    return kept


PlainParts = tuple[tuple[bool, str], ...]
"""A path template as (is a path parameter's name, text) parts."""


def plain_parts(template: Template, names: Iterable[str]) -> PlainParts | None:
    """The template's parts when each placeholder is a bare `{name}` of one of the route's
    path parameters (`names`): filled by a join, without a lookup per placeholder
    (render_text, ~3 us a path). None for anything else (a filter, a type, another
    source): render_text then."""
    known = set(names)
    parts: list[tuple[bool, str]] = []
    for part in template.parts:
        if isinstance(part, str):
            parts.append((False, part))
        elif (
            part.source == "path"
            and part.key in known
            and not part.field
            and part.type_name is None
            and not part.filters
        ):
            parts.append((True, part.key))
        else:
            return None
    return tuple(parts)


class UpstreamStreamingResponse(StreamingResponse):
    """Streams an upstream body; the upstream connection and slot are released exactly once,
    however the response ends (completed, failed, or cancelled before it even started: an
    async generator that never ran would never reach its `finally`).

    An upstream that breaks off, or passes the exchange's deadline, mid-body cuts the answer:
    the client sees an incomplete response (uvicorn closes the connection), not a 500."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        status_code: int,
        release: Callable[[], None],
        backend: str,
    ) -> None:
        super().__init__(content, status_code=status_code)
        self._release = release
        self._backend = backend

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("passthrough to %s cut mid-body: %s", self._backend, type(exc).__name__)
        finally:
            self._release()


async def _before(deadline: float, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`chunks`, each waited for no later than `deadline` (loop time): TimeoutError then."""
    while True:
        async with asyncio.timeout_at(deadline):
            chunk = await anext(chunks, None)
        if chunk is None:
            return
        yield chunk


def passthrough_app(
    route_path: str,
    proxy: ProxySpec,
    upstream: Passthrough,
    default_timeout: float,
    max_body: int,
    forwarding: Forwarding,
    error_details: bool = False,
) -> PassthroughApp:
    """The ASGI app of one passthrough endpoint, built once at start-up (see PassthroughApp)."""
    return PassthroughApp(
        route_path,
        proxy,
        upstream,
        proxy.timeout or default_timeout,
        max_body,
        forwarding,
        error_details,
    )


class PassthroughApp:
    """One passthrough endpoint as a plain ASGI app: it reads the raw scope and sends the
    raw answer messages itself, with no Starlette request, context or response object on the
    way of an answer read whole (what the route's steps need, when it has any, is built by
    web/steps.py before this runs).

    The route's `timeout` (else the backend's) bounds the whole exchange: the wait for an
    upstream slot, the upload, the upstream's head and its whole body. Past it the answer is
    504, or, once the body has started, the answer is cut off.

    The endpoint's body limit is checked first: a declared Content-Length over it is 413
    before anything else is done (what the `body_limit` step does on other routes).
    """

    __slots__ = (
        "backend",
        "deadlines",
        "error_details",
        "forwarding",
        "max_body",
        "parts",
        "pattern",
        "seconds",
        "template",
        "upstream",
    )

    def __init__(
        self,
        route_path: str,
        proxy: ProxySpec,
        upstream: Passthrough,
        seconds: float,
        max_body: int,
        forwarding: Forwarding,
        error_details: bool,
    ) -> None:
        self.pattern = raw_path_pattern(route_path)
        self.template = parse_template(proxy.path)
        self.parts = plain_parts(self.template, self.pattern.groupindex)
        self.seconds = seconds
        self.backend = proxy.backend
        self.upstream = upstream
        self.max_body = max_body
        self.forwarding = forwarding
        self.error_details = error_details
        self.deadlines = Timeouts()

    def __repr__(self) -> str:
        return f"<PassthroughApp {self.pattern.pattern} -> {self.backend}>"

    def failed(self, status: int, detail: str, exc: BaseException) -> Response:
        # the exception names the upstream's address: for error_details endpoints only
        if self.error_details:
            return problem(status, detail, details=str(exc))
        return problem(status, detail)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = await self.exchange(scope, receive)
        if type(outcome) is tuple:
            # an upstream answer read whole (~300 bytes of JSON: the common case): its two
            # messages sent as they are, without a Response object
            status, headers, content = outcome
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content})
        else:
            assert isinstance(outcome, Response)
            await outcome(scope, receive, send)

    async def exchange(
        self, scope: Scope, receive: Receive
    ) -> Response | tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The answer to send: a response (a problem, a streamed upstream answer), or the
        status, headers and body of an upstream answer read whole."""
        loop = asyncio.get_running_loop()  # once: in Python 3.11 each call is a getpid()
        deadline = loop.time() + self.seconds
        headers, client = upstream_request_headers(scope["headers"])
        limit = self.max_body
        declared = client.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return problem(413, f"request body is larger than {limit} bytes")
        raw_path: bytes = scope.get("raw_path", b"")
        match = self.pattern.match(
            raw_path.decode("latin-1") if raw_path else Request(scope).url.path
        )
        if match is None:
            return problem(400, "path segments '.' and '..' are not allowed")
        params: dict[str, str] = {}
        for name, raw in match.groupdict().items():
            value = reencode(raw)
            if value is None:
                return problem(400, "path segments '.' and '..' are not allowed")
            params[name] = value
        # the values are re-encoded already: filled in as they are
        parts = self.parts
        if parts is not None:
            path = "".join([params[text] if named else text for named, text in parts])
        else:
            path = render_text(self.template, {"path": params}, str)
        try:
            # read from the scope: Starlette's `request.url` builds and parses a URL
            query = scope.get("query_string", b"").decode()
        except UnicodeDecodeError:
            return problem(400, "the query string is not UTF-8")
        upstream = self.upstream
        backend = self.backend
        url = upstream.url(path, query)
        try:
            # a small body is here whole already; before any upstream slot is taken
            body = await upstream_body(receive, client, limit)
        except BodyTooLarge as exc:
            return problem(413, str(exc))
        except ClientDisconnect:
            return problem(400, "the client went away while sending its body")
        if isinstance(body, bytes) and "expect" in client:
            # the client's `Expect: 100-continue` was answered by the server, and the body is
            # here: asking the upstream would only wait for its 100 (which some never send)
            headers = [(k, v) for k, v in headers if k.lower() != "expect"]
        headers.append(("X-Request-ID", current_request_id.get()))
        parent = traceparent()  # the request's span, when tracing is on
        if parent is not None:
            headers = [(k, v) for k, v in headers if k.lower() != "traceparent"]
            headers.append(("traceparent", parent))
        peer = scope["client"][0] if scope.get("client") else None
        headers += self.forwarding.upstream_headers(peer, scope.get("scheme", "http"), client)

        slots = upstream.slots
        if slots._value > 0 and not slots._waiters:
            # free: taken as `acquire` would, without arming a timer (~4 us), its coroutine
            # or the generator `locked()` makes (as backends/http.py takes a call's slot)
            slots._value -= 1
        else:
            try:
                # the wait for a free upstream slot is part of the exchange's time
                async with asyncio.timeout_at(deadline):
                    await slots.acquire()
            except TimeoutError:
                return problem(503, f"{backend} is at capacity", headers={"Retry-After": "1"})
        answer: aiohttp.ClientResponse | None = None
        content: bytes | None = None
        streamed = False
        try:
            # one deadline for the upstream's head and, when small, its whole body, without
            # a loop timer of its own (gateway/timers.py)
            with self.deadlines.scope(deadline):
                answer = await upstream.session.request(
                    scope["method"],
                    url,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    auto_decompress=False,
                    # what the client sent, exactly: no Accept or Accept-Encoding of our own
                    skip_auto_headers=_NOT_ADDED,
                )
                if answer.status < 200:
                    # 101 (aiohttp reads past other 1xx itself): nothing here asked to switch
                    # protocols (Upgrade is never forwarded), and what follows is not HTTP
                    answer.close()
                    status = answer.status
                    return problem(502, f"{backend} answered {status} without being asked to")
                length = answer.content_length
                if length is not None and length <= CHUNK:
                    # A small body of known size is read whole: one send instead of a
                    # streaming response's disconnect-watching task group (~10% of a
                    # passthrough)
                    content = await answer.read()
            streamed = content is None
        except BodyTooLarge as exc:
            return problem(413, str(exc))
        except ClientDisconnect:
            return problem(400, "the client went away while sending its body")
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return problem(504, f"{backend} did not answer within {self.seconds:g}s")
        except aiohttp.ClientError as exc:
            if answer is not None:
                return self.failed(502, f"{backend} broke off its answer", exc)
            if isinstance(exc.__cause__, BodyTooLarge):
                return problem(413, str(exc.__cause__))
            if isinstance(exc.__cause__, ClientDisconnect):
                return problem(400, "the client went away while sending its body")
            return self.failed(502, f"cannot reach {backend}", exc)
        finally:
            if not streamed:  # else the streaming response releases them, exactly once
                if answer is not None:
                    answer.release()
                slots.release()

        raw_headers = client_answer_headers(answer.raw_headers)
        if content is not None:
            return answer.status, raw_headers, content
        done = answer

        def release() -> None:
            done.release()
            slots.release()

        chunks = _before(deadline, answer.content.iter_chunked(CHUNK))
        response = UpstreamStreamingResponse(chunks, answer.status, release, backend)
        response.raw_headers = raw_headers
        return response
