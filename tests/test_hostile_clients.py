"""Hostile clients (issue 11, findings 2-5, 12, 14, 15): each attack against a real gateway
process on 127.0.0.1, from raw sockets (tests/attacks.py), with a normal client on another
connection the whole time and the gateway's RSS sampled (tests/watch.py).

Every attack is small but past its limit (an 8 KiB line limit is shown by a 4 MiB line, not
64 MiB), and the timeouts are set to a second or two, so the module runs in well under a
minute. What each asserts is the bounded outcome: the status, what reached the backend
(counted by a fault proxy or a hostile upstream in front of it), the normal client's answers,
and how far the gateway's memory rose.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests import attacks
from tests.attacks import LAST_CHUNK, chunk
from tests.faultproxy import fault_proxy
from tests.gateways import gateway, until
from tests.hostile_upstream import hostile_upstream
from tests.processes import Running
from tests.watch import NormalClient, RssWatch

HEAD_TIMEOUT, BODY_TIMEOUT = 1.0, 1.5
LIMITS = {
    "GATEWAY_HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
    "GATEWAY_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
}
CONFIG = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}"}}
  upstream: {{kind: http, url: "{upstream}", max_connections: 5}}
endpoints:
  - path: /agg/{{id}}
    calls:
      - {{name: product, backend: catalog, path: "/products/{{id}}"}}
  - path: /agg/{{id}}
    method: POST
    calls:
      - {{name: product, backend: catalog, path: "/products/{{id}}"}}
  - path: /pass/{{rest:path}}
    proxy: {{backend: upstream, path: "/{{rest}}"}}
  - path: /small/{{rest:path}}
    max_body: 32KiB
    proxy: {{backend: upstream, path: "/{{rest}}"}}
  - path: /large/{{rest:path}}
    max_body: 256KiB
    proxy: {{backend: upstream, path: "/{{rest}}"}}
"""
MEMORY_BOUND_MIB = 40  # an attack may cost a few MiB of buffers, never its own size


async def test_20000_headers_are_refused_while_parsing_and_livez_keeps_answering(
    catalog: Running, tmp_path: Path
) -> None:
    """Finding 2: 20,000 headers (~250 KB) blocked the loop for 9 s. Past GATEWAY_MAX_HEADERS
    (100) the parser stops: 431 before the app runs; the most headers allowed are cheap."""
    async with (
        fault_proxy(catalog.port) as backend,
        hostile_upstream("echo") as upstream,
        gateway(tmp_path, CONFIG.format(catalog=backend.url, upstream=upstream.url)) as gw,
    ):
        with RssWatch(gw.pid) as rss:
            async with NormalClient(gw.running.url) as normal:
                floods = await asyncio.gather(
                    *(
                        attacks.attack(gw.port, attacks.header_flood("/agg/1", 20_000))
                        for _ in range(5)
                    )
                )
                # about the most a client may send: 100 lines (Host and Connection among them)
                allowed = attacks.many_headers("/agg/1", 98, 600)
                assert len(allowed) < 64 * 1024
                fulls = await asyncio.gather(
                    *(attacks.attack(gw.port, [allowed]) for _ in range(50))
                )
        assert {flood.status for flood in floods} == {431}
        assert b"more than 100 header lines" in floods[0].answer
        assert (
            b"application/problem+json" in floods[0].answer and b"x-request-id" in floods[0].answer
        )
        assert {full.status for full in fulls} == {200}
        assert backend.requests == 50  # the floods never reached it
        assert normal.statuses == {200}
        assert rss.grew < MEMORY_BOUND_MIB, rss.grew
        assert await gw.metric("gateway_protocol_refusals_total", reason="header_count") == 5


async def test_a_huge_header_line_is_refused_after_the_limit_not_after_its_length(
    catalog: Running, tmp_path: Path
) -> None:
    """Finding 3: a 64 MiB header line was read whole (quadratically). A head is refused once
    past GATEWAY_MAX_HEADER_BYTES (64 KiB), a single line past GATEWAY_MAX_HEADER_LINE_BYTES
    (8 KiB), a request line past it with 414."""
    async with (
        fault_proxy(catalog.port) as backend,
        hostile_upstream("echo") as upstream,
        gateway(tmp_path, CONFIG.format(catalog=backend.url, upstream=upstream.url)) as gw,
    ):
        with RssWatch(gw.pid) as rss:
            async with NormalClient(gw.running.url) as normal:
                huge = await asyncio.gather(
                    *(
                        attacks.attack(gw.port, attacks.huge_line("/agg/1", 4 << 20))
                        for _ in range(10)
                    )
                )
                line = await attacks.attack(
                    gw.port, [attacks.head("/agg/1", extra=f"X-Big: {'a' * 9000}\r\n")]
                )
                fits = await attacks.attack(
                    gw.port, [attacks.head("/agg/1", extra=f"X-Big: {'a' * 7000}\r\n")]
                )
                target = await attacks.attack(gw.port, [attacks.head("/agg/" + "1" * 9000)])
        assert {h.status for h in huge} == {431}
        assert b"request head is larger than 65536 bytes" in huge[0].answer
        assert line.status == 431 and b"header line is longer than 8192" in line.answer
        assert fits.status == 200
        assert target.status == 414
        assert backend.requests == 1  # only the request within the limits
        assert normal.statuses == {200}
        assert rss.grew < MEMORY_BOUND_MIB, rss.grew


async def test_slow_request_bodies_hold_no_backend_slot(catalog: Running, tmp_path: Path) -> None:
    """Finding 4: 100 passthrough POSTs dripping 1 byte/s held every backend slot. A body up
    to GATEWAY_BUFFER_BODY_BYTES is read whole before a slot is taken, and a body that is not
    complete within GATEWAY_BODY_TIMEOUT_SECONDS gets 408."""
    async with (
        hostile_upstream("echo") as upstream,
        gateway(
            tmp_path, CONFIG.format(catalog=catalog.url, upstream=upstream.url), env=LIMITS
        ) as gw,
    ):
        with RssWatch(gw.pid) as rss:
            async with NormalClient(gw.running.url, "/pass/anything") as normal:
                # 20 slow uploads against a backend of 5 slots (max_connections: 5)
                slow = await asyncio.gather(
                    *(
                        attacks.attack(gw.port, attacks.slow_body("/pass/upload", 100, 0.1))
                        for _ in range(20)
                    )
                )
        assert {s.status for s in slow} == {408}, {s.status for s in slow}
        assert all(BODY_TIMEOUT - 0.2 < s.elapsed < BODY_TIMEOUT + 5 for s in slow), [
            s.elapsed for s in slow
        ]
        # the normal client kept its slot: every answer 200, none a 503 "at capacity"
        assert normal.statuses == {200}
        assert upstream.requests == len(normal.answers)  # no slow upload reached it
        assert rss.grew < MEMORY_BOUND_MIB, rss.grew
        assert await gw.metric("gateway_protocol_refusals_total", reason="body_timeout") == 20


async def test_a_kept_alive_connection_has_the_head_timeout_from_each_answer(
    catalog: Running, tmp_path: Path
) -> None:
    """The head timer runs from the end of each exchange, not from the connection's start:
    requests spaced under the timeout keep a connection open longer than it, and the
    connection is closed one timeout after its last answer (one timer per connection,
    re-armed by each answer, server/protocol.py)."""
    async with (
        hostile_upstream("echo") as upstream,
        gateway(
            tmp_path, CONFIG.format(catalog=catalog.url, upstream=upstream.url), env=LIMITS
        ) as gw,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        loop = asyncio.get_running_loop()
        opened = loop.time()
        for _ in range(4):  # 4 x 0.6 of the timeout: open for 2.4 timeouts in all
            writer.write(b"GET /livez HTTP/1.1\r\nHost: gateway\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            answered = loop.time()
            await asyncio.sleep(HEAD_TIMEOUT * 0.6)  # the client's pace, under the timeout
        assert loop.time() - opened > 2 * HEAD_TIMEOUT
        assert await reader.read() == b""  # then closed, without an answer ...
        closed = loop.time() - answered
        assert HEAD_TIMEOUT - 0.2 < closed < HEAD_TIMEOUT + 2, closed  # ... at the timeout
        writer.close()


async def test_slow_and_silent_connections_are_closed_at_the_head_timeout(
    catalog: Running, tmp_path: Path
) -> None:
    """Finding 5: 2,000 connections dripping headers stayed open 40 s, and connections that
    never send a byte were never closed. The whole head must arrive within
    GATEWAY_HEADER_TIMEOUT_SECONDS of the connection's start: 408, or a silent close."""
    async with (
        fault_proxy(catalog.port) as backend,
        hostile_upstream("echo") as upstream,
        gateway(
            tmp_path, CONFIG.format(catalog=backend.url, upstream=upstream.url), env=LIMITS
        ) as gw,
    ):
        with RssWatch(gw.pid) as rss:
            async with NormalClient(gw.running.url) as normal:
                dripping = [
                    attacks.attack(gw.port, attacks.slow_head("/agg/1", 0.05)) for _ in range(100)
                ]
                silent = [attacks.attack(gw.port, attacks.silence()) for _ in range(100)]
                outcomes = await asyncio.gather(*dripping, *silent)
        slow, idle = outcomes[:100], outcomes[100:]
        assert {s.status for s in slow} == {408}
        assert all(s.closed for s in outcomes)
        assert {i.status for i in idle} == {None}  # closed without an answer
        assert all(HEAD_TIMEOUT - 0.2 < o.elapsed < HEAD_TIMEOUT + 5 for o in outcomes)
        assert backend.requests == 0
        assert normal.statuses == {200}
        assert rss.grew < MEMORY_BOUND_MIB, rss.grew
        assert await gw.metric("gateway_protocol_refusals_total", reason="header_timeout") == 100
        # (and this test's own idle keep-alive connection, closed at the same timeout)
        assert await gw.metric("gateway_protocol_refusals_total", reason="idle_timeout") >= 100
        # every attacking connection is gone (the normal client's and this one may remain)
        await gw.wait_metric("gateway_open_connections", lambda open_now: open_now <= 2)


async def test_a_passthrough_body_over_the_limit_never_reaches_the_upstream_past_it(
    catalog: Running, tmp_path: Path
) -> None:
    """Finding 12, passthrough half: the 413 came after ~384 KiB had reached the upstream. A
    body within GATEWAY_BUFFER_BODY_BYTES is checked whole before the upstream is called; a
    larger one is counted as it streams and broken off before the byte past the limit."""
    async with (
        hostile_upstream("echo") as upstream,
        gateway(tmp_path, CONFIG.format(catalog=catalog.url, upstream=upstream.url)) as gw,
    ):
        with RssWatch(gw.pid) as rss:
            async with NormalClient(gw.running.url) as normal:
                # 40 KiB, chunked, to a route allowing 32 KiB: nothing reaches the upstream
                small = await attacks.attack(
                    gw.port,
                    attacks.chunked("/small/upload", [chunk(b"x" * 8192)] * 5 + [LAST_CHUNK]),
                )
                reached_small = upstream.requests
                # 1 MiB, chunked, to a route allowing 256 KiB: at most 256 KiB reach it
                large = await attacks.attack(
                    gw.port,
                    attacks.chunked("/large/upload", [chunk(b"x" * 16384)] * 64 + [LAST_CHUNK]),
                )
                await until(lambda: upstream.open_connections == 0)  # it read all it was sent
                reached_large = upstream.received
                within = await attacks.attack(
                    gw.port,
                    attacks.chunked("/large/upload", [chunk(b"x" * 16384)] * 8 + [LAST_CHUNK]),
                )
        assert small.status == 413 and reached_small == 0 and upstream.requests == 2
        assert large.status == 413
        # the head and the chunk framing add a little; the 1 MiB body did not get through
        assert 64 * 1024 <= reached_large <= 256 * 1024 + 4096, reached_large
        assert within.status == 200 and b'"body_bytes"' in within.answer
        assert normal.statuses == {200}
        assert rss.grew < MEMORY_BOUND_MIB, rss.grew


REJECTED = {
    "bad chunk size": attacks.chunked("/agg/1", [b"zz\r\nabc\r\n", LAST_CHUNK]),
    "bad chunk after a good one": attacks.chunked("/agg/1", [chunk(b"x" * 1000), b"1;\x00\r\n"]),
    "xchunked": [
        attacks.head("/agg/1", "POST", extra="Transfer-Encoding: xchunked\r\n"),
        chunk(b"abc"),
    ],
    "length and chunked": [
        attacks.head("/agg/1", "POST", extra="Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"),
        chunk(b"abc") + LAST_CHUNK,
    ],
    "bad length": [attacks.head("/agg/1", "POST", extra="Content-Length: 3x\r\n"), b"abc"],
    "get with a bad chunk": attacks.chunked("/agg/1", [b"zz\r\n"], method="GET"),
}


async def test_a_request_httptools_rejects_never_reaches_a_backend(
    catalog: Running, tmp_path: Path
) -> None:
    """Finding 14: requests that httptools refused with 400 (bad chunk sizes, `xchunked`)
    still reached aggregation backends: uvicorn starts the app once the head is parsed, and
    the framing error comes later, in the body. The protocol now reads a body (up to
    GATEWAY_BUFFER_BODY_BYTES) before the app runs, so the 400 comes first and alone."""
    async with (
        fault_proxy(catalog.port) as backend,
        hostile_upstream("echo") as upstream,
        gateway(tmp_path, CONFIG.format(catalog=backend.url, upstream=upstream.url)) as gw,
    ):
        with RssWatch(gw.pid) as rss:
            async with NormalClient(gw.running.url) as normal:
                outcomes = {
                    name: await attacks.attack(gw.port, pieces) for name, pieces in REJECTED.items()
                }
                accepted = await attacks.attack(
                    gw.port, attacks.chunked("/agg/1", [chunk(b"x" * 1000), LAST_CHUNK])
                )
        assert {name: o.status for name, o in outcomes.items()} == dict.fromkeys(REJECTED, 400)
        assert b"application/problem+json" in outcomes["xchunked"].answer
        assert accepted.status == 200
        assert backend.requests == 1  # the well-framed one only
        assert normal.statuses == {200}
        assert rss.grew < MEMORY_BOUND_MIB, rss.grew


async def test_a_request_needs_exactly_one_host(catalog: Running, tmp_path: Path) -> None:
    """Finding 15: HTTP/1.1 requests without Host, or with two, were answered 200. RFC 9112
    3.2: 400 for both; HTTP/1.0 may go without one."""
    async with (
        fault_proxy(catalog.port) as backend,
        hostile_upstream("echo") as upstream,
        gateway(tmp_path, CONFIG.format(catalog=backend.url, upstream=upstream.url)) as gw,
    ):
        async with NormalClient(gw.running.url) as normal:
            missing = await attacks.attack(gw.port, [attacks.head("/agg/1", host=False)])
            twice = await attacks.attack(gw.port, [attacks.head("/agg/1", extra="Host: other\r\n")])
            old = await attacks.attack(gw.port, [b"GET /agg/1 HTTP/1.0\r\n\r\n"])
            old_twice = await attacks.attack(
                gw.port, [b"GET /agg/1 HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"]
            )
        assert (missing.status, twice.status, old.status, old_twice.status) == (400, 400, 200, 400)
        assert b"exactly one Host header" in missing.answer
        assert backend.requests == 1  # the HTTP/1.0 one
        assert normal.statuses == {200}
        assert await gw.metric("gateway_protocol_refusals_total", reason="bad_host") == 3


async def test_a_client_waiting_for_100_continue_gets_it_while_its_body_is_buffered(
    catalog: Running, tmp_path: Path
) -> None:
    """The protocol reads a small body before the app runs; a client that sends
    `Expect: 100-continue` waits for the 100 before sending it, so the protocol sends it."""
    async with (
        hostile_upstream("echo") as upstream,
        gateway(tmp_path, CONFIG.format(catalog=catalog.url, upstream=upstream.url)) as gw,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(
                attacks.head(
                    "/pass/upload", "POST", extra="Content-Length: 5\r\nExpect: 100-continue\r\n"
                )
            )
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"hello")
            answer = await reader.read()
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer
        assert b'"body_bytes":5' in answer
        assert b'"expect"' not in answer  # the body was here: the upstream is not asked
