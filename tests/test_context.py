"""The request context, built from an ASGI scope: a table of what templates then read."""

from __future__ import annotations

from typing import Any

from gateway.engine.context import RequestContext

SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "GET",
    "path": "/p/7",
    "path_params": {"id": "7"},
    "query_string": b"lang=pt&tag=a&tag=b&empty=&q=caf%C3%A9",
    "headers": [
        (b"accept-language", b"pt-PT"),
        (b"x-twice", b"first"),
        (b"x-twice", b"second"),
        (b"host", b"gw"),
    ],
    "client": ("10.1.2.3", 5555),
}


def test_context_holds_the_request_as_sources() -> None:
    context = RequestContext.from_scope(SCOPE, "rid-1")
    assert context.request_id == "rid-1" and context.method == "GET"
    assert context.path == {"id": "7"}
    # query: the last value of a repeated name, every pair in order for forwarding
    assert context.query == {"lang": "pt", "tag": "b", "empty": "", "q": "café"}
    assert context.query_items == (
        ("lang", "pt"),
        ("tag", "a"),
        ("tag", "b"),
        ("empty", ""),
        ("q", "café"),
    )
    # headers: lower-case names, the first value of a repeated one
    assert context.headers == {"accept-language": "pt-PT", "x-twice": "first", "host": "gw"}
    assert context.sources["client"] == {"ip": "10.1.2.3"}


def test_a_step_adds_a_source_without_changing_the_original() -> None:
    context = RequestContext.from_scope(SCOPE, "rid-1")
    enriched = context.with_source("auth", {"sub": "u1"})
    assert enriched.sources["auth"] == {"sub": "u1"}
    assert "auth" not in context.sources
    assert enriched.headers is context.headers


def test_many_headers_are_read_in_one_pass() -> None:
    scope = {**SCOPE, "headers": [(f"x-h{i}".encode(), b"v") for i in range(20_000)]}
    context = RequestContext.from_scope(scope, "rid")
    assert len(context.headers) == 20_000
