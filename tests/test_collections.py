"""Collections end to end: `for_each` over HTTP and legacy backends, its concurrency cap,
deduplication, partial answers, `max_items`, `join`, `*` paths, and every KrakenD flatmap
example, through a real gateway process against real backends (the catalog and inventory
demo services, and tests/collections_backend.py, which counts what it is asked)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest

from services.catalog import author, product, stable_int
from tests.flatmap_examples import EXAMPLES, MOVES, NOTATION
from tests.processes import Running, start, start_gateway

ITEMS = "{{name: items, backend: counted, path: /items, query: {{n: '{{query.n|default:10}}'%s}}, target: items, group: items}}"
DETAILS = "{{name: details, backend: counted, path: '/item/{{item.id}}', for_each: calls.items, into: details%s}}"


def items(extra: str = "") -> str:
    return ITEMS % extra


def details(extra: str = "") -> str:
    return DETAILS % extra


CONFIG = f"""
version: 1
backends:
  catalog: {{{{kind: http, url: "{{catalog}}", timeout: 5s}}}}
  counted: {{{{kind: http, url: "{{counted}}", timeout: 10s}}}}
  inventory:
    kind: legacy
    target: services.inventory.client:InventoryClient
    options: {{{{base_url: "{{inventory}}", timeout: 10}}}}
    threads: 8
    queue: 16
    timeout: 10s
endpoints:
  - path: /enriched
    error_details: true
    calls:
      - {{{{name: products, backend: catalog, path: /products, query: {{{{limit: "20"}}}}, target: items, allow: [id, name], group: products}}}}
      - {{{{name: author, backend: catalog, path: "/authors/{{{{item.author_id}}}}", for_each: calls.products, into: author, allow: [name, country]}}}}
      - {{{{name: stock, backend: inventory, method: stock_level, args: {{{{sku: "{{{{item.id}}}}"}}}}, for_each: calls.products, into: stock}}}}
  - path: /capped
    calls:
      - {items()}
      - {details(", query: {{delay: 100ms}}, concurrency: 4")}
  - path: /default-cap
    calls:
      - {items()}
      - {details(", query: {{delay: 100ms}}")}
  - path: /dedup
    calls:
      - {items(", authors: '3'")}
      - {{{{name: author, backend: counted, path: "/author/{{{{item.author_id}}}}", for_each: calls.items, into: author}}}}
  - path: /partial
    error_details: true
    calls:
      - {items()}
      - {details(", query: {{fail: '7'}}")}
  - path: /partial-required
    calls:
      - {items()}
      - {details(", query: {{fail: '7'}}, required: true")}
  - path: /slow-element
    error_details: true
    calls:
      - {items()}
      - {details(", query: {{slow: '3'}}, timeout: 300ms")}
  - path: /retried
    calls:
      - {items()}
      - {details(", query: {{flaky: '5'}}, retry: {{attempts: 2, backoff: 1ms, on: [503]}}")}
  - path: /too-many
    error_details: true
    calls:
      - {items()}
      - {details(", max_items: 100")}
  - path: /joined
    calls:
      - {items()}
      - {{{{name: ratings, backend: counted, path: /ratings, query: {{{{ids: "{{{{calls.items.*.id|join:,}}}}"}}}}, target: ratings, deny: [product_id], join: {{{{into: items, on: id, key: product_id, as: rating}}}}}}}}
  - path: /joined-many
    calls:
      - {items()}
      - {{{{name: ratings, backend: counted, path: /ratings, query: {{{{ids: "{{{{calls.items.*.id|join:,}}}}"}}}}, target: ratings, join: {{{{into: items, on: id, key: product_id, as: ratings, many: true}}}}}}}}
  - path: /starred-allow
    calls:
      - {{{{name: page, backend: counted, path: /items, query: {{{{n: "3"}}}}, allow: ["items.*.id", "items.*.tags.*.name"]}}}}
  - path: /starred-deny
    calls:
      - {{{{name: page, backend: counted, path: /items, query: {{{{n: "2"}}}}, deny: ["items.*.secret", "items.*.tags.*.internal", "items.*.name", total]}}}}
  - path: /starred-target
    calls:
      - {{{{name: ids, backend: counted, path: /items, query: {{{{n: "3"}}}}, target: "items.*.id"}}}}
"""


def flatmap_endpoints() -> str:
    """One endpoint per translated KrakenD example, on a call and on the merged body."""
    out = []
    for name, (_, spec, _) in EXAMPLES.items():
        out.append(
            f"  - path: /flatmap/{name}\n    calls:\n"
            f"      - {{name: doc, backend: counted, path: /doc/{name}, shape: {json.dumps(spec)}}}\n"
            f"  - path: /flatmap-endpoint/{name}\n    shape: {json.dumps(spec)}\n    calls:\n"
            f"      - {{name: doc, backend: counted, path: /doc/{name}}}\n"
            f"      - {{name: meta, backend: counted, path: /items, query: {{n: '1'}}, target: total, group: meta}}\n"
        )
    for index, (path, _) in enumerate(NOTATION):
        out.append(
            f"  - path: /notation/{index}\n    calls:\n"
            f"      - {{name: doc, backend: counted, path: /doc/notation, target: '{path}', group: value}}\n"
        )
    for index, (source, target, _) in enumerate(MOVES):
        out.append(
            f"  - path: /moves/{index}\n    calls:\n"
            f"      - {{name: doc, backend: counted, path: /doc/notation, shape: {{move: {{'{source}': '{target}'}}}}}}\n"
        )
    return "".join(out)


@pytest.fixture(scope="module")
def inventory() -> Iterator[Running]:
    service = start("inventory", [sys.executable, "-m", "services.inventory", "--latency", "0ms"])
    yield service
    assert service.stop() == 0


@pytest.fixture(scope="module")
def counted() -> Iterator[Running]:
    service = start("counted", [sys.executable, "-m", "tests.collections_backend"])
    yield service
    service.stop()  # uvicorn re-raises SIGTERM once it has shut down: -15, as the services


@pytest.fixture(scope="module")
def gateway(
    catalog: Running,
    inventory: Running,
    counted: Running,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:
    path = tmp_path_factory.mktemp("collections") / "gateway.yaml"
    config = CONFIG.format(catalog=catalog.url, counted=counted.url, inventory=inventory.url)
    path.write_text(config + flatmap_endpoints())
    running = start_gateway(path)
    yield running
    assert running.stop() == 0


@pytest.fixture
def http(gateway: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


@pytest.fixture
def backend(counted: Running) -> Iterator[httpx.Client]:
    """The counting backend, its counts zeroed."""
    with httpx.Client(base_url=counted.url, timeout=30) as client:
        client.post("/reset").raise_for_status()
        yield client


def stats(backend: httpx.Client) -> dict[str, Any]:
    return backend.get("/stats").json()  # type: ignore[no-any-return]


def metric(http: httpx.Client, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_every_element_of_a_20_item_page_gets_its_author_and_its_stock(
    http: httpx.Client,
) -> None:
    response = http.get("/enriched")
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-complete"] == "true"
    listed = response.json()["products"]
    assert [p["id"] for p in listed] == list(range(1, 21))
    for item in listed:
        known = product(item["id"])
        assert known is not None
        expected_author = author(known["author_id"])
        assert expected_author is not None
        assert set(item) == {"id", "name", "author", "stock"}  # allow, then the attached keys
        assert item["author"] == {
            "name": expected_author["name"],
            "country": expected_author["country"],
        }
        assert item["stock"]["sku"] == item["id"]
        assert item["stock"]["level"] == stable_int("inventory.level", item["id"], 120)
    # two products by the same author make one author call
    distinct = len({product(i)["author_id"] for i in range(1, 21)})  # type: ignore[index]
    assert distinct < 20
    sent = metric(http, "gateway_for_each_requests_total", endpoint="/enriched", call="author")
    assert sent == distinct
    ok = metric(
        http, "gateway_for_each_elements_total", endpoint="/enriched", call="stock", outcome="ok"
    )
    assert ok == 20


@pytest.mark.parametrize(("path", "n", "cap"), [("/capped", 20, 4), ("/default-cap", 30, 10)])
def test_requests_in_flight_never_exceed_the_concurrency(
    http: httpx.Client, backend: httpx.Client, path: str, n: int, cap: int
) -> None:
    response = http.get(path, params={"n": str(n)})
    assert response.status_code == 200
    assert response.headers["x-gateway-complete"] == "true"
    assert [i["details"]["price"] for i in response.json()["items"]] == [
        100 + i for i in range(1, n + 1)
    ]
    seen = stats(backend)
    assert seen["routes"] == {"items": 1, "item": n}
    assert seen["peak"] == cap  # the list call is over before the elements start


def test_identical_element_requests_are_sent_once(
    http: httpx.Client, backend: httpx.Client
) -> None:
    body = http.get("/dedup", params={"n": "20"}).json()
    assert [i["author"]["id"] for i in body["items"]] == [1 + (i - 1) % 3 for i in range(1, 21)]
    assert stats(backend)["routes"] == {"items": 1, "author": 3}


def test_one_failing_element_gives_the_documented_partial_answer(
    http: httpx.Client, backend: httpx.Client
) -> None:
    response = http.get("/partial")
    assert response.status_code == 200
    assert response.headers["x-gateway-complete"] == "false"
    body = response.json()
    with_details = [i["id"] for i in body["items"] if "details" in i]
    assert with_details == [1, 2, 3, 4, 5, 6, 8, 9, 10]  # item 7 (index 6) has no key
    assert body["_errors"]["details"]["elements"] == [6]
    assert body["_errors"]["details"]["status"] == 503
    assert body["_errors"]["details"]["error"].startswith("1 of 10 elements failed; element 6:")


def test_a_required_for_each_fails_the_endpoint_when_an_element_fails(http: httpx.Client) -> None:
    response = http.get("/partial-required")
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["failed_calls"]["details"]["elements"] == [6]


def test_each_element_gets_the_calls_own_timeout(http: httpx.Client, backend: httpx.Client) -> None:
    started = time.monotonic()
    response = http.get("/slow-element")
    assert time.monotonic() - started < 4.0  # item 3 takes 5 s; its try is cut at 300 ms
    body = response.json()
    assert [i["id"] for i in body["items"] if "details" not in i] == [3]
    assert "timeout of 0.3s" in body["_errors"]["details"]["error"]


def test_each_element_gets_the_calls_retries(http: httpx.Client, backend: httpx.Client) -> None:
    response = http.get("/retried")
    assert response.headers["x-gateway-complete"] == "true"
    assert all("details" in i for i in response.json()["items"])
    assert stats(backend)["routes"]["item"] == 11  # item 5 answered 503 once, then 200


def test_beyond_max_items_the_call_fails_and_nothing_is_sent(
    http: httpx.Client, backend: httpx.Client
) -> None:
    response = http.get("/too-many", params={"n": "150"})
    assert response.status_code == 200
    assert response.headers["x-gateway-complete"] == "false"
    body = response.json()
    assert len(body["items"]) == 150 and "details" not in body["items"][0]
    assert body["_errors"]["details"]["error"] == (
        "calls.items has 150 elements, more than max_items (100): nothing was sent"
    )
    assert stats(backend)["routes"] == {"items": 1}
    assert http.get("/too-many", params={"n": "100"}).headers["x-gateway-complete"] == "true"


def test_a_hostile_10000_element_list_costs_one_call_and_no_memory(
    http: httpx.Client, backend: httpx.Client, gateway: Running
) -> None:
    process = psutil.Process(gateway.process.pid)
    http.get("/too-many", params={"n": "10000"})  # warm-up: first allocations
    before = process.memory_info().rss
    for _ in range(20):  # 20 x ~1 MB lists
        response = http.get("/too-many", params={"n": "10000"})
        assert "more than max_items (100)" in response.json()["_errors"]["details"]["error"]
    assert process.memory_info().rss - before < 40 * 1024 * 1024
    assert stats(backend)["routes"] == {"items": 21}  # never one element request


def test_join_attaches_by_key_and_leaves_misses_without_a_key(
    http: httpx.Client, backend: httpx.Client
) -> None:
    body = http.get("/joined", params={"n": "6"}).json()
    assert [i.get("rating") for i in body["items"]] == [
        None if i % 2 else {"stars": i % 5} for i in range(1, 7)
    ]
    assert all("rating" not in i for i in body["items"] if i["id"] % 2)
    assert stats(backend)["routes"] == {"items": 1, "ratings": 1}  # one batched call
    many = http.get("/joined-many", params={"n": "3"}).json()
    assert [i["ratings"] for i in many["items"]] == [[], [{"product_id": 2, "stars": 2}], []]


def test_star_paths_in_allow_deny_and_target(http: httpx.Client) -> None:
    assert http.get("/starred-allow").json() == {
        "items": [{"id": i, "tags": [{"name": f"t{i}"}]} for i in (1, 2, 3)]
    }
    assert http.get("/starred-deny").json() == {
        "items": [{"id": i, "author_id": i, "sku": i, "tags": [{"name": f"t{i}"}]} for i in (1, 2)]
    }
    assert http.get("/starred-target").json() == {"ids": [1, 2, 3]}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_krakend_flatmap_examples_on_a_call_and_on_the_merged_body(
    http: httpx.Client, name: str
) -> None:
    expected = EXAMPLES[name][2]
    assert http.get(f"/flatmap/{name}").json() == expected
    assert http.get(f"/flatmap-endpoint/{name}").json() == {**expected, "meta": 1}


@pytest.mark.parametrize(("index", "case"), list(enumerate(NOTATION)))
def test_krakend_notation_as_targets(http: httpx.Client, index: int, case: Any) -> None:
    assert http.get(f"/notation/{index}").json() == {"value": case[1]}


@pytest.mark.parametrize(("index", "case"), list(enumerate(MOVES)))
def test_krakend_practical_moves(http: httpx.Client, index: int, case: Any) -> None:
    assert http.get(f"/moves/{index}").json() == case[2]
