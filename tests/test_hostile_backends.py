"""Hostile and broken backends (issue 11, findings 1, 6, 7, 9, 10, 11): raw asyncio servers
(tests/hostile_upstream.py) behind a real gateway process, a normal client on another
connection the whole time, the gateway's RSS sampled (tests/watch.py).

Each asserts the bounded outcome: the status the client gets, that the normal client kept
being answered, and how far the gateway's memory rose while it ran and where it came back to.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import orjson

from tests import attacks
from tests.gateways import gateway, until
from tests.hostile_upstream import gzip_bomb, hostile_upstream
from tests.processes import Running
from tests.watch import MIB, NormalClient, RssWatch

AGGREGATION = """
version: 1
backends:
  catalog: {{kind: http, url: "{catalog}"}}
  hostile: {{kind: http, url: "{hostile}", timeout: 10s}}
endpoints:
  - path: /page/{{id}}
    timeout: 10s
    calls:
      - {{name: product, backend: catalog, path: "/products/{{id}}", required: true, group: product}}
      - {{name: extra, backend: hostile, path: /anything, required: true, group: extra}}
  - path: /pass/{{rest:path}}
    timeout: 10s
    proxy: {{backend: hostile, path: "/{{rest}}", timeout: {proxy_timeout}s}}
"""


def config(catalog: Running, hostile: str, proxy_timeout: float = 10) -> str:
    return AGGREGATION.format(catalog=catalog.url, hostile=hostile, proxy_timeout=proxy_timeout)


async def test_endless_bodies_and_gzip_bombs_cost_at_most_max_response(
    catalog: Running, tmp_path: Path
) -> None:
    """Finding 1: an endless JSON body took RSS 68 -> 712 MiB on one request, a 3 MB gzip body
    inflating to 3 GiB did the same, and the memory stayed. Answers are counted decompressed
    and a call stops at `max_response` (8 MiB): 502 "response too large"."""
    async with (
        hostile_upstream("endless") as endless,
        hostile_upstream("bomb", bomb_mib=1024) as bomb,
        gateway(tmp_path, config(catalog, endless.url)) as gw_endless,
        gateway(tmp_path, config(catalog, bomb.url)) as gw_bomb,
    ):
        for gw in (gw_endless, gw_bomb):
            await gw.http.get("/page/1")  # warm: the first answer allocates what every one needs
            with RssWatch(gw.pid) as rss:
                async with NormalClient(gw.running.url) as normal:
                    started = time.monotonic()
                    answers = await asyncio.gather(*(gw.http.get("/page/1") for _ in range(8)))
                    elapsed = time.monotonic() - started
            for answer in answers:
                assert answer.status_code == 502, answer.text
                error = answer.json()["failed_calls"]["extra"]["error"]
                assert error.startswith("response too large"), error
            assert elapsed < 10, "the calls ran to their timeout instead of the limit"
            assert normal.statuses == {200}
            # 8 concurrent calls, each holding at most 8 MiB (and a chunk) at a time
            assert rss.grew < 8 * 8 + 40, rss.grew
            # the memory comes back once the burst is over (gateway/observability/memory.py)
            await until(lambda: (rss.now() - rss.before) / MIB < 50, seconds=10)


async def test_a_passthrough_is_bounded_by_its_timeout_as_a_whole(
    catalog: Running, tmp_path: Path
) -> None:
    """Finding 6: an upstream dripping a byte a second kept a client 70 s (the idle timer was
    reset by each byte). The route's timeout bounds the whole exchange: 504 before the head,
    the answer cut off after it."""
    timeout = 1.0
    async with (
        hostile_upstream("drip") as drip,
        hostile_upstream("silent") as silent,
        gateway(tmp_path, config(catalog, drip.url, timeout)) as gw_drip,
        gateway(tmp_path, config(catalog, silent.url, timeout)) as gw_silent,
    ):
        drip.drip_every = 0.05
        async with NormalClient(gw_drip.running.url) as normal:
            started = time.monotonic()
            cut = False
            try:
                async with gw_drip.http.stream("GET", "/pass/big") as response:
                    assert response.status_code == 200
                    async for _ in response.aiter_bytes():
                        pass
            except httpx.RemoteProtocolError:
                cut = True  # incomplete body: the connection was closed mid-answer
            streamed = time.monotonic() - started
            drip.drip_length = 1000  # a small answer: read whole before the head goes out
            started = time.monotonic()
            small = await gw_drip.http.get("/pass/small")
            small_elapsed = time.monotonic() - started
        assert cut
        assert timeout - 0.1 < streamed < timeout + 3, streamed
        assert small.status_code == 504 and timeout - 0.1 < small_elapsed < timeout + 3
        assert normal.statuses == {200}

        started = time.monotonic()
        never = await gw_silent.http.get("/pass/anything")
        assert never.status_code == 504, never.text
        assert time.monotonic() - started < timeout + 3


async def test_a_passthrough_forwards_accept_encoding_exactly_and_never_decompresses(
    catalog: Running, tmp_path: Path
) -> None:
    """Finding 7: the passthrough added `Accept-Encoding: gzip, deflate, br`, so a client that
    sent none got a gzip body it never asked for."""
    async with (
        hostile_upstream("echo") as echo,
        hostile_upstream("bomb", bomb_mib=4) as gzipped,
        gateway(tmp_path, config(catalog, echo.url)) as gw,
        gateway(tmp_path, config(catalog, gzipped.url)) as gw_gzip,
    ):
        # a raw request: a client library would add an Accept-Encoding of its own
        raw = await attacks.attack(gw.port, [attacks.head("/pass/x")])
        seen = orjson.loads(raw.answer.partition(b"\r\n\r\n")[2])["headers"]
        assert "accept-encoding" not in seen and "accept" not in seen, seen
        exact = (
            await gw.http.get("/pass/x", headers={"Accept-Encoding": "identity;q=1, br;q=0"})
        ).json()
        assert exact["headers"]["accept-encoding"] == "identity;q=1, br;q=0"

        async with gw_gzip.http.stream(
            "GET", "/pass/x", headers={"Accept-Encoding": "gzip"}
        ) as response:
            assert response.headers["content-encoding"] == "gzip"
            body = b"".join([chunk async for chunk in response.aiter_raw()])
        assert body == gzip_bomb(4)  # passed on as sent: not inflated


async def test_an_unsolicited_switching_protocols_is_refused(
    catalog: Running, tmp_path: Path
) -> None:
    """Finding 9: an unsolicited `101 Switching Protocols` was passed on to the client."""
    async with (
        hostile_upstream("switch") as switch,
        gateway(tmp_path, config(catalog, switch.url)) as gw,
    ):
        async with NormalClient(gw.running.url) as normal:
            passed = await gw.http.get("/pass/anything")
            aggregated = await gw.http.get("/page/1")
        assert passed.status_code == 502, passed.text
        assert passed.headers["content-type"] == "application/problem+json"
        assert "answered 101" in passed.json()["detail"]
        assert aggregated.status_code == 502
        assert aggregated.json()["failed_calls"]["extra"]["status"] == 101
        assert normal.statuses == {200}
        assert switch.requests == 2


INJECTION = """
version: 1
backends:
  echo: {{kind: http, url: "{echo}"}}
endpoints:
  - path: /note
    calls:
      - {{name: noted, backend: echo, path: /n, headers: {{x-note: "note: {{query.note}}"}}, group: noted}}
  - path: /relay
    calls:
      - {{name: first, backend: echo, path: /a, query: {{q: "{{query.q}}"}}, group: first}}
      - name: second
        backend: echo
        path: /b
        headers: {{x-relayed: "{{calls.first.query.q}}"}}
        needs: [first]
        required: true
        group: second
"""


async def test_control_characters_never_reach_a_header_and_never_make_a_500(
    tmp_path: Path,
) -> None:
    """Finding 10: a template that rendered CR/LF into a header answered 500. A client value
    is refused with 400 naming it; a value from an upstream result fails the call."""
    async with (
        hostile_upstream("echo") as echo,
        gateway(tmp_path, INJECTION.format(echo=echo.url)) as gw,
    ):
        injected = await gw.http.get("/note", params={"note": "a\r\nX-Injected: 1"})
        assert injected.status_code == 400, injected.text
        assert (
            injected.json()["detail"]
            == "query parameter 'note' must not contain control characters"
        )
        assert (
            await gw.http.get("/note", params={"note": "a\tb"})
        ).status_code == 200  # HTAB is allowed
        # the client's CR/LF is fine in a query (encoded); relayed into a header, it fails the call
        relayed = await gw.http.get("/relay", params={"q": "a\r\nX-Injected: 1"})
        assert relayed.status_code == 502, relayed.text
        error = relayed.json()["failed_calls"]["second"]["error"]
        assert "control characters" in error
        assert echo.requests == 2  # the /note with a tab, and /relay's first call
        assert "Traceback" not in gw.log()


LEAKY = """
version: 1
backends:
  dead: {{kind: http, url: "http://127.0.0.1:{port}"}}
endpoints:
  - path: /quiet
    calls: [{{name: dead, backend: dead, path: /x, required: true}}]
  - path: /detailed
    error_details: true
    calls: [{{name: dead, backend: dead, path: /x, required: true}}]
  - path: /pass/quiet
    proxy: {{backend: dead, path: /x}}
  - path: /pass/detailed
    error_details: true
    proxy: {{backend: dead, path: /x}}
"""


async def test_error_answers_name_no_internal_address_unless_asked(tmp_path: Path) -> None:
    """Finding 11: 502 bodies said `Cannot connect to host 127.0.0.1:9109` and named upstream
    URLs with `error_details` off. The address is a detail, shown with `error_details: true`."""
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    async with gateway(tmp_path, LEAKY.format(port=port)) as gw:
        quiet = [await gw.http.get("/quiet"), await gw.http.get("/pass/quiet")]
        detailed = [await gw.http.get("/detailed"), await gw.http.get("/pass/detailed")]
    for answer in quiet:
        assert answer.status_code == 502, answer.text
        assert "127.0.0.1" not in answer.text and str(port) not in answer.text, answer.text
        assert "cannot reach dead" in answer.text
    aggregated, passed = (answer.json() for answer in detailed)
    assert f"127.0.0.1:{port}" in aggregated["failed_calls"]["dead"]["details"]
    assert f"127.0.0.1:{port}" in passed["details"]
