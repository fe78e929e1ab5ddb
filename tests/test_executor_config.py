"""Config checks of legacy and compute backends: one precise line per problem."""

from __future__ import annotations

import pytest

from gateway.config.loader import parse_spec
from gateway.errors import ConfigError

BACKENDS = """
version: 1
backends:
  catalog: {kind: http, url: "http://127.0.0.1:8101"}
  inventory: {kind: legacy, target: "services.inventory.client:InventoryClient", options: {base_url: "http://127.0.0.1:8103"}}
  context: {kind: legacy, target: "tests.executor_targets:whoami"}
  pricing: {kind: compute, target: "services.pricing:bundle_offer"}
"""

BAD = [
    (
        "endpoints: [{path: /a, calls: [{backend: inventory, args: {sku: '1'}}]}]",
        "endpoints[0].calls[0]: name the InventoryClient method to call in `method`",
    ),
    (
        "endpoints: [{path: /a, calls: [{backend: inventory, method: stock_levle}]}]",
        "endpoints[0].calls[0].method: InventoryClient has no method 'stock_levle'",
    ),
    (
        "endpoints: [{path: /a, calls: [{backend: context, method: run}]}]",
        "endpoints[0].calls[0].method: 'tests.executor_targets:whoami' is a function: no `method`",
    ),
    (
        "endpoints: [{path: /a, calls: [{backend: pricing, path: /x, args: {id: '1'}}]}]",
        "endpoints[0].calls[0].path: not used by a compute backend ('pricing'): "
        "only http backends' calls take `path`",
    ),
    (
        "endpoints: [{path: /a, calls: [{backend: catalog, args: {id: '1'}}]}]",
        "endpoints[0].calls[0].args: not used by an http backend ('catalog'): "
        "only legacy and compute backends' calls take `args`",
    ),
    (
        "endpoints: [{path: /a, calls: [{backend: catalog, method: FETCH}]}]",
        "endpoints[0].calls[0].method: Input should be 'GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE' or 'OPTIONS'",
    ),
    (
        "endpoints: [{path: /a, calls: [{backend: pricing, args: {id: '{idd}'}}]}]",
        "endpoints[0].calls[0].args.id: {idd}: the endpoint path has no parameter 'idd'",
    ),
]


@pytest.mark.parametrize(("body", "expected"), BAD)
def test_bad_calls(body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_spec(BACKENDS + body, "demo.yaml")
    assert f"demo.yaml: {expected}" in caught.value.problems, caught.value.problems


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ("{kind: legacy, target: nocolon}", "backends.c.target: String should match pattern"),
        (
            "{kind: legacy, target: 'no_such_mod:x'}",
            "backends.c.target: cannot import 'no_such_mod'",
        ),
        (
            "{kind: legacy, target: 'services.pricing:nope'}",
            "backends.c.target: 'services.pricing' has no attribute 'nope'",
        ),
        (
            "{kind: compute, target: 'services.inventory.client:InventoryClient'}",
            "backends.c.target: must be a module-level function",
        ),
        (
            "{kind: legacy, target: 'services.pricing:bundle_offer', threads: 0}",
            "backends.c.threads: Input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_backends(backend: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_spec(f"version: 1\nbackends:\n  c: {backend}\n", "f.yaml")
    assert any(line.startswith(f"f.yaml: {expected}") for line in caught.value.problems), (
        caught.value.problems
    )


def test_good_calls_keep_http_methods_case_insensitive() -> None:
    spec = parse_spec(
        BACKENDS
        + "endpoints: [{path: '/a/{id}', calls: ["
        + "{name: p, backend: catalog, method: post, path: /x}, "
        + "{name: s, backend: inventory, method: stock_level, args: {sku: '{id}'}}, "
        + "{name: o, backend: pricing, args: {id: '{id}'}}]}]",
        "ok.yaml",
    )
    assert [c.method for c in spec.endpoints[0].calls] == ["post", "stock_level", "GET"]
