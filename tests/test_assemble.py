"""The body from outcomes, as tables: `into` and `join` placement (through allow/deny/rename),
chains, failed elements, shaping order. Plans come from config text, outcomes are made up."""

from __future__ import annotations

from typing import Any

from gateway.backends.registry import traits_of
from gateway.config.loader import parse_spec
from gateway.engine.assemble import assemble
from gateway.engine.execute import Outcome
from gateway.engine.plan import EndpointPlan, plan_endpoint
from gateway.errors import BadStatus

BACKENDS = 'version: 1\nbackends: {c: {kind: http, url: "http://127.0.0.1:1"}}\n'


def endpoint(calls: str, extra: str = "") -> EndpointPlan:
    spec = parse_spec(BACKENDS + f"endpoints:\n  - path: /x\n{extra}    calls:\n{calls}", "t.yaml")
    return plan_endpoint(spec.endpoints[0], spec.backends, traits_of)


def ok(name: str, value: Any, failed: dict[int, Any] | None = None) -> Outcome:
    return Outcome(name, 0.0, value=value, failed_elements=failed or {})


PRODUCTS = [
    {"id": 1, "author_id": 10, "price_cents": 5},
    {"id": 2, "author_id": 20, "price_cents": 9},
    {"id": 3, "author_id": 10, "price_cents": 7},
]
AUTHORS = [{"id": 10, "name": "Ann", "secret": 1}, None, {"id": 10, "name": "Ann", "secret": 1}]

ENRICHED = """\
      - {name: products, backend: c, allow: [id, price_cents], rename: {price_cents: price},
         group: products}
      - {name: author, backend: c, path: "/a/{item.author_id}", for_each: calls.products,
         into: author, deny: [secret]}
"""


def test_into_goes_after_allow_and_rename_and_skips_failed_elements() -> None:
    plan = endpoint(ENRICHED)
    outcomes = {
        "products": ok("products", PRODUCTS),
        "author": ok("author", AUTHORS, {1: BadStatus("no", status=503)}),
    }
    assert assemble(plan.calls, outcomes, plan.shaping) == {
        "products": [
            {"id": 1, "price": 5, "author": {"id": 10, "name": "Ann"}},
            {"id": 2, "price": 9},  # its author failed: no key
            {"id": 3, "price": 7, "author": {"id": 10, "name": "Ann"}},
        ]
    }
    assert PRODUCTS[0] == {"id": 1, "author_id": 10, "price_cents": 5}  # nothing mutated


def test_a_null_answer_is_kept_as_null() -> None:
    plan = endpoint(ENRICHED)
    outcomes = {"products": ok("products", PRODUCTS[:1]), "author": ok("author", [None])}
    assert assemble(plan.calls, outcomes)["products"] == [{"id": 1, "price": 5, "author": None}]


def test_without_into_the_results_are_a_list_in_source_order() -> None:
    plan = endpoint(
        "      - {name: products, backend: c, group: products}\n"
        "      - {name: author, backend: c, path: '/a/{item.author_id}', for_each: calls.products,"
        " allow: [name], shape: {move: {name: who}}}\n"
    )
    outcomes = {"products": ok("products", PRODUCTS), "author": ok("author", AUTHORS, {1: None})}
    body = assemble(plan.calls, outcomes)
    assert body["author"] == [{"who": "Ann"}, None, {"who": "Ann"}]  # shape: per element


def test_chains_attach_into_attached_results_and_renamed_nested_lists() -> None:
    plan = endpoint(
        "      - {name: page, backend: c, rename: {items: products}}\n"
        "      - {name: author, backend: c, path: '/a/{item.author_id}',"
        " for_each: calls.page.items, into: author}\n"
        "      - {name: country, backend: c, path: '/c/{item.country}',"
        " for_each: calls.author, into: details.country}\n"
    )
    outcomes = {
        "page": ok("page", {"items": [{"author_id": 1}, {"author_id": 2}], "total": 2}),
        "author": ok("author", [{"country": "PT"}, {"country": "NO"}]),
        "country": ok("country", [{"name": "Portugal"}, {"name": "Norway"}]),
    }
    assert assemble(plan.calls, outcomes) == {
        "products": [
            {
                "author_id": 1,
                "author": {"country": "PT", "details": {"country": {"name": "Portugal"}}},
            },
            {
                "author_id": 2,
                "author": {"country": "NO", "details": {"country": {"name": "Norway"}}},
            },
        ],
        "total": 2,
    }


JOINED = """\
      - {name: products, backend: c, target: items, allow: [id], group: products}
      - name: ratings
        backend: c
        path: /ratings
        query: {ids: "{calls.products.*.id|join:,}"}
        deny: [product_id]
        join: {into: products, on: id, key: product_id, as: rating%s}
"""


def test_join_attaches_by_key_and_leaves_misses_without_a_key() -> None:
    plan = endpoint(JOINED % "")
    outcomes = {
        "products": ok("products", PRODUCTS),
        "ratings": ok("ratings", [{"product_id": "2", "stars": 4}, {"product_id": 9, "stars": 1}]),
    }
    assert assemble(plan.calls, outcomes) == {
        "products": [{"id": 1}, {"id": 2, "rating": {"stars": 4}}, {"id": 3}]  # "2" matches 2
    }
    assert plan.calls[1].needs == ("products",)  # implied by join.into


def test_join_many_attaches_every_match() -> None:
    plan = endpoint(JOINED % ", many: true")
    ratings = [{"product_id": 1, "stars": 4}, {"product_id": 1, "stars": 2}]
    outcomes = {"products": ok("products", PRODUCTS[:2]), "ratings": ok("ratings", ratings)}
    assert assemble(plan.calls, outcomes)["products"] == [
        {"id": 1, "rating": [{"stars": 4}, {"stars": 2}]},
        {"id": 2, "rating": []},
    ]


def test_shapes_run_after_attachments_and_the_endpoint_shape_last() -> None:
    plan = endpoint(
        "      - {name: products, backend: c, group: products,"
        " shape: {sort: {by: author.name, order: desc}}}\n"
        "      - {name: author, backend: c, path: '/a/{item.author_id}', for_each: calls.products,"
        " into: author}\n",
        extra="    shape: {limit: {path: products, n: 1}, move: {products.0.id: first}}\n",
    )
    outcomes = {
        "products": ok("products", PRODUCTS[:2]),
        "author": ok("author", [{"name": "Ann"}, {"name": "Zoe"}]),
    }
    body = assemble(plan.calls, outcomes, plan.shaping)
    assert body == {
        "products": [{"author_id": 20, "price_cents": 9, "author": {"name": "Zoe"}}],
        "first": 2,
    }


def test_failed_calls_are_left_out() -> None:
    plan = endpoint(ENRICHED)
    outcomes = {
        "products": ok("products", PRODUCTS),
        "author": Outcome("author", 0.0, error=BadStatus("down", status=503)),
    }
    assert assemble(plan.calls, outcomes)["products"][0] == {"id": 1, "price": 5}
