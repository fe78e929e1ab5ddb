"""The URLs an HTTP backend keeps built (`HttpUpstream.call_url`): the same URL as built
afresh, base URLs in rotation, and a bounded cache whatever the client puts in a query."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from yarl import URL

from gateway.backends.http import URL_CACHE, URL_CACHE_CHARS, HttpUpstream

BASES = ("http://a.internal:8101", "http://b.internal:8102")


@pytest.fixture
async def upstream() -> AsyncIterator[HttpUpstream]:
    async with aiohttp.ClientSession() as session:
        yield HttpUpstream(
            name="up", session=session, base_urls=BASES, slots=asyncio.Semaphore(1), capacity=1
        )


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/products/1", ()),
        ("/products/1", (("delay", "20"),)),
        ("/a%2Fb/c", (("q", "x y&z=1"), ("q", "é"))),  # %2F stays; values encoded once
        ("/search", (("tags", "a,b"), ("empty", ""))),
    ],
)
async def test_a_kept_url_is_the_url_built_afresh(
    upstream: HttpUpstream, path: str, query: tuple[tuple[str, str], ...]
) -> None:
    for base in BASES * 2:  # each base in turn, the second time from the cache
        url = upstream.call_url(path, query)
        expected = URL(base + path, encoded=True)
        if query:
            expected = expected.extend_query(query)
        assert url == expected
        assert str(url).startswith(base + path)


async def test_the_same_call_reuses_its_url_per_base(upstream: HttpUpstream) -> None:
    first = [upstream.call_url("/p", (("id", "1"),)) for _ in BASES]
    again = [upstream.call_url("/p", (("id", "1"),)) for _ in BASES]
    assert all(a is b for a, b in zip(first, again, strict=True))
    assert first[0] != first[1]  # one per base URL


async def test_distinct_client_values_never_grow_the_cache_past_its_bound(
    upstream: HttpUpstream,
) -> None:
    for n in range(3 * URL_CACHE):
        upstream.call_url("/search", (("q", f"value-{n}"),))
        assert len(upstream._urls) <= URL_CACHE


async def test_a_long_url_is_built_but_not_kept(upstream: HttpUpstream) -> None:
    long_value = "x" * (URL_CACHE_CHARS + 1)
    url = upstream.call_url("/search", (("q", long_value),))
    assert url.query["q"] == long_value
    assert upstream._urls == {}
