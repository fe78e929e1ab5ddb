"""The `max_connections` slots of an HTTP backend's aggregation calls: a free slot is taken
at once (the fast path in `http_call`), a call finding none waits for one (Semaphore's own
`acquire`), and every call gives its slot back, a failed one too."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import aiohttp
import pytest

from gateway.backends.http import HttpUpstream, http_call
from gateway.errors import UpstreamUnavailable
from gateway.types import BackendRequest
from tests.gateways import until
from tests.threaded_http import JsonHandler, ThreadedHttp

ARRIVED = threading.Event()  # the slow request reached the backend
GATE = threading.Event()  # the slow request may be answered


class Handler(JsonHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            ARRIVED.set()
            GATE.wait(10)
        self.send_json({"path": self.path})


@pytest.fixture
def backend() -> Iterator[ThreadedHttp]:
    ARRIVED.clear()
    GATE.clear()
    server = ThreadedHttp(Handler)
    yield server
    GATE.set()
    server.close()


def upstream_of(session: aiohttp.ClientSession, url: str) -> HttpUpstream:
    slots = asyncio.Semaphore(1)
    return HttpUpstream(name="up", session=session, base_urls=(url,), slots=slots, capacity=1)


async def test_a_call_waits_for_the_only_slot_then_both_give_it_back(
    backend: ThreadedHttp,
) -> None:
    async with aiohttp.ClientSession() as session:
        upstream = upstream_of(session, backend.url)
        call = http_call(upstream)
        slow = asyncio.ensure_future(call(BackendRequest(path="/slow")))
        assert await asyncio.to_thread(ARRIVED.wait, 10)
        assert upstream.usage() == {"in_use": 1, "max": 1}
        fast = asyncio.ensure_future(call(BackendRequest(path="/fast")))
        await until(lambda: bool(upstream.slots._waiters))  # queued behind the slow call
        assert not fast.done()
        GATE.set()
        assert (await slow).body == {"path": "/slow"}
        assert (await fast).body == {"path": "/fast"}
        assert upstream.usage() == {"in_use": 0, "max": 1}


async def test_a_failed_call_gives_its_slot_back() -> None:
    gone = ThreadedHttp(Handler)
    address = gone.url
    gone.close()  # nothing listens there any more: every call fails to connect
    async with aiohttp.ClientSession() as session:
        upstream = upstream_of(session, address)
        call = http_call(upstream)
        for _ in range(2):  # the second finds the slot free again (a kept one: it would wait)
            with pytest.raises(UpstreamUnavailable):
                async with asyncio.timeout(10):
                    await call(BackendRequest(path="/fast"))
        assert upstream.usage() == {"in_use": 0, "max": 1}
