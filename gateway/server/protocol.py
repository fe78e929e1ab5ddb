"""The gateway's HTTP/1.1 protocol: uvicorn's httptools protocol, plus the limits a client
connection must keep (gateway/server/limits.py) and connection counting for /metrics.

Everything here is decided while parsing, before the app (and so any backend) sees the
request, since the costs it bounds are paid while parsing:

* **Head size** (431, 414 for the request line): the bytes of a head are counted as they are
  fed to the parser, which gets at most the room left under `max_header_bytes` at a time, so
  a 64 MiB header line costs 64 KiB, not 64 MiB of quadratic `+=` inside httptools (which
  reassembles header fragments itself). Lines and their count are checked on each callback.
  A head that starts inside the same read as the end of the previous request is counted from
  the next read on, so such a (pipelined) head may reach twice the limit, never more.
* **Head timeout** (408 and close): the whole head must arrive within `header_timeout`,
  counted from the connection's start or the end of the previous exchange; a connection that
  sends nothing in that time is closed without an answer. uvicorn has only its keep-alive
  timer, which every byte restarts and which does not run before the first request.
* **Body timeout** (408): the whole body must arrive within `body_timeout` of its head.
* **Body buffering**: a body up to `buffer_body_bytes` (or the first that many bytes of a
  chunked one) is read before the app starts, so a slow upload holds no backend slot or
  connection, and a body whose framing is broken (a bad chunk size) is refused before any
  call is made. uvicorn starts the app as soon as the head is parsed.
* **Host** (400): an HTTP/1.1 request needs exactly one Host header, a request of any
  version at most one (RFC 9112 3.2); httptools accepts both.

One event loop serves one process, so the per-process counters are exact; each uvicorn
worker is its own process with its own counters.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httptools
from uvicorn._types import ASGI3Application
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from gateway.errors import ProtocolRefusal
from gateway.server.limits import limits_of
from gateway.server.refusals import REFUSALS, refusal

log = logging.getLogger("gateway.protocol")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LINGER_SECONDS = 2.0
"""After a refusal, how long the rest of what the client sends is read and dropped before
the connection closes (nginx's lingering close): closing a socket with unread bytes sends a
reset, and a reset can destroy the answer before the client reads it."""


@dataclass(slots=True)
class ConnectionCounter:
    """Open connections now, and the most seen at once since start."""

    open: int = 0
    peak: int = 0

    def opened(self) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)

    def closed(self) -> None:
        self.open -= 1


CLIENT_CONNECTIONS = ConnectionCounter()


class HeadWithBody:
    """A request's transport (what uvicorn's request cycle writes its answer to): the
    answer's first write, its head, is held and written together with the next one, its
    body (or its first chunk), or at the end of the loop's turn if none comes in it.

    uvicorn writes the head and the body of an answer with a write each, and uvloop sends
    each at once: two send calls and two TCP segments for an answer of a few hundred bytes.
    One write of both is one call and one segment (strace, a passthrough of ~300 bytes: 3
    writes a request before, 2 after)."""

    __slots__ = ("_first", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._first = True

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif self._first:
            self._first = False
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docstring."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, object],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits_of(config)
        self._head_bytes: int | None = 0  # bytes of the head being read; None in a body
        self._messages = 0  # requests parsed whole: a change during one feed starts a head
        self._header_lines = 0
        self._url_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_due: float | None = None  # when the head waited for is late
        self._body_timer: asyncio.TimerHandle | None = None
        self._buffer_body = False  # read the latest request's body before its app starts
        self._deferred: tuple[RequestResponseCycle, ASGI3Application] | None = None
        self._lingering: asyncio.TimerHandle | None = None  # refused: dropping what comes

    # --- the connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        CLIENT_CONNECTIONS.opened()
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        CLIENT_CONNECTIONS.closed()
        self._cancel_timers()
        if self._lingering is not None:
            self._lingering.cancel()
        self._deferred = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            return  # refused already: what follows is dropped until the client closes
        self._unset_keepalive_if_required()
        view = memoryview(data)
        limit = self.limits.max_header_bytes
        try:
            while view and self.parser is not None:
                head = self._head_bytes
                room = limit - head if head is not None else limit
                if room <= 0:
                    raise ProtocolRefusal(
                        431, "header_bytes", f"request head is larger than {limit} bytes"
                    )
                piece, view = view[:room], view[room:]
                messages = self._messages
                self.parser.feed_data(piece)
                # a head that began inside this piece is counted from the next piece on
                if self._head_bytes is not None and head is not None and messages == self._messages:
                    self._head_bytes += len(piece)
        except ProtocolRefusal as refused:
            self._refuse(refused)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, ProtocolRefusal):
                self._refuse(cause)
            else:
                self._refuse(ProtocolRefusal(400, "bad_request", f"invalid HTTP request: {exc}"))

    # --- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._header_lines = 0
        self._url_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.limits.max_header_line_bytes:
            limit = self.limits.max_header_line_bytes
            raise ProtocolRefusal(
                414, "request_line", f"request target is longer than {limit} bytes"
            )
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_lines += 1
        if self._header_lines > self.limits.max_headers:
            limit = self.limits.max_headers
            raise ProtocolRefusal(431, "header_count", f"more than {limit} header lines")
        if len(name) + len(value) + 2 > self.limits.max_header_line_bytes:
            limit = self.limits.max_header_line_bytes
            raise ProtocolRefusal(431, "header_line", f"a header line is longer than {limit} bytes")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._cancel_head_timer()
        hosts = sum(1 for name, _ in self.headers if name == b"host")
        if hosts > 1 or (hosts == 0 and self.parser.get_http_version() == "1.1"):
            raise ProtocolRefusal(
                400, "bad_host", "an HTTP/1.1 request needs exactly one Host header"
            )
        length, chunked, expect = 0, False, False
        for name, value in self.headers:
            if name == b"content-length":
                # httptools refuses a length that is not digits; one that got past would
                # raise here, and the request be refused (400) all the same
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"expect":
                expect = value.lower() == b"100-continue"
        if chunked or length:
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_late)
        # a large declared body behind `Expect: 100-continue` is left to the app, which may
        # refuse it (413) before the client sends any of it
        large = length > self.limits.buffer_body_bytes
        self._buffer_body = (chunked or length > 0) and not (large and expect)
        before = self.cycle
        super().on_headers_complete()  # builds the cycle, then calls _start_asgi_task
        cycle = self.cycle
        if cycle is not before and cycle is not None:  # a new request (its app not run yet)
            cycle.transport = HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if self._should_buffer(cycle):
            self._deferred = (cycle, app)
            if cycle.waiting_for_100_continue:
                # the client waits for this before sending the body we wait for
                self.transport.write(CONTINUE)
                cycle.waiting_for_100_continue = False
            return
        super()._start_asgi_task(cycle, app)

    def on_body(self, body: bytes) -> None:
        deferred = self._deferred
        if deferred is None:
            super().on_body(body)
            return
        cycle = deferred[0]
        cycle.body += body
        if len(cycle.body) >= self.limits.buffer_body_bytes:
            self._start_deferred()  # the app streams the rest (and bounds it)

    def on_message_complete(self) -> None:
        self._messages += 1
        self._head_bytes = 0
        self._cancel_body_timer()
        super().on_message_complete()
        if self._deferred is not None:
            self._start_deferred()
        elif self.cycle is not None and self.cycle.response_complete:
            self._arm_head_timer()  # answered before its body ended: the next head starts now

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request
        if self.transport.is_closing() or not self.cycle.response_complete:
            return
        if self._head_bytes is not None:  # the request's body is in: wait for the next head
            self._arm_head_timer()

    # --- buffering -------------------------------------------------------------------------

    def _should_buffer(self, cycle: RequestResponseCycle) -> bool:
        """Read this request's body before its app starts? (see the module docstring)"""
        return (
            self._buffer_body
            and self.limits.buffer_body_bytes > 0
            and cycle is self.cycle  # the request whose head was parsed last
            and cycle.more_body
        )

    def _start_deferred(self) -> None:
        deferred, self._deferred = self._deferred, None
        if deferred is not None:
            cycle, app = deferred
            cycle.message_event.set()  # what is buffered is ready for the first receive
            super()._start_asgi_task(cycle, app)

    # --- timers and refusals ---------------------------------------------------------------

    # The head timer is armed once per connection, not once per request: a request only
    # moves `_head_due` (a head waited for is late then; None: none is waited for), and the
    # timer, when it fires early, waits again until then. Arming and cancelling a loop timer
    # per request cost ~8 us of a passthrough (py-spy, _arm_head_timer + _cancel_head_timer).

    def _arm_head_timer(self) -> None:
        due = self.loop.time() + self.limits.header_timeout
        self._head_due = due
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(due, self._head_check)

    def _cancel_head_timer(self) -> None:
        self._head_due = None  # the timer, if armed, finds nothing due

    def _stop_head_timer(self) -> None:
        self._head_due = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_check(self) -> None:
        self._head_timer = None
        due = self._head_due
        if due is None:
            return
        if self.loop.time() < due:  # re-armed since: wait until then
            self._head_timer = self.loop.call_at(due, self._head_check)
            return
        self._head_due = None
        self._head_late()

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_timers(self) -> None:
        self._stop_head_timer()
        self._cancel_body_timer()

    def _head_late(self) -> None:
        if self.transport.is_closing():
            return
        if not self._head_bytes:
            REFUSALS["idle_timeout"] += 1
            self.transport.close()
            return
        limit = self.limits.header_timeout
        self._refuse(
            ProtocolRefusal(408, "header_timeout", f"request head not received within {limit:g}s")
        )

    def _body_late(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        limit = self.limits.body_timeout
        self._refuse(
            ProtocolRefusal(408, "body_timeout", f"request body not received within {limit:g}s")
        )

    def _refuse(self, refused: ProtocolRefusal) -> None:
        """Answer `refused` (unless an answer has started: then just close), then close."""
        REFUSALS[refused.reason] += 1
        log.debug("refused %s: %s (%s)", self.client, refused.detail, refused.reason)
        self._cancel_timers()
        self._deferred = None  # its app never runs
        cycle = self.cycle
        answered = cycle is not None and cycle.response_started and not cycle.response_complete
        if cycle is not None and not cycle.response_complete:
            # the app, if it runs, sees the client gone: its reads end, its answer is dropped
            cycle.disconnected = True
            cycle.message_event.set()
        transport = self.transport
        if answered or transport.is_closing() or not transport.can_write_eof():
            transport.close()
            return
        transport.write(refusal(refused.status, refused.detail, self.server_state.default_headers))
        transport.write_eof()  # the answer, then FIN; the client's EOF closes the connection
        self.flow.resume_reading()
        self._lingering = self.loop.call_later(LINGER_SECONDS, transport.close)
