"""Pricing: bundle offers computed by a CPU-bound algorithm over the demo catalog.

`bundle_offer(id)` picks, among the products sharing a tag with product `id`, the set whose
total price fits a budget (the product's own price) with the highest affinity, an exact 0/1
knapsack solved by dynamic programming in steps of 10 cents: ~1M table updates in pure Python,
tens of milliseconds of CPU with the GIL held. Run in a thread, it would stall the gateway's
event loop and every other thread; the gateway runs it as a `compute` backend, in a worker
process. Deterministic: the same id always gives the same offer.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from services.catalog import PRODUCT_COUNT, product

BUNDLE_DISCOUNT = 0.10
STEP_CENTS = 10
MIN_BUDGET_CENTS = 50_00
MAX_BUDGET_CENTS = 400_00


@cache
def _catalog() -> tuple[dict[str, Any], ...]:
    # built once per worker process; products are deterministic, so every worker agrees
    return tuple(p for p in (product(i) for i in range(1, PRODUCT_COUNT + 1)) if p is not None)


def _affinity(anchor: dict[str, Any], other: dict[str, Any]) -> int:
    shared_tags = len(set(anchor["tags"]) & set(other["tags"]))
    width_gap = abs(anchor["dimensions"]["width_mm"] - other["dimensions"]["width_mm"])
    same_author = other["author_id"] == anchor["author_id"]
    return int(10 * shared_tags + max(0, 10 - width_gap // 100) + (5 if same_author else 0))


def bundle_offer(id: str, budget: str | None = None) -> dict[str, Any]:
    """The best bundle to offer with product `id` within `budget` cents (default: twice its
    price). Arguments are strings: a call's `args` are rendered from templates."""
    anchor = product(int(id))
    if anchor is None:
        raise ValueError(f"unknown product {id}")
    cents = int(budget) if budget is not None else 2 * anchor["price_cents"]
    limit = max(MIN_BUDGET_CENTS, min(cents, MAX_BUDGET_CENTS)) // STEP_CENTS
    candidates = [
        (p, _affinity(anchor, p), -(-p["price_cents"] // STEP_CENTS))
        for p in _catalog()
        if p["id"] != anchor["id"] and set(p["tags"]) & set(anchor["tags"])
    ]
    candidates = [c for c in candidates if c[2] <= limit]
    # best[b]: the highest affinity of a bundle costing at most b steps; `took` records, per
    # candidate, the budgets at which taking it improved the best, to rebuild the bundle
    best = [0] * (limit + 1)
    took: list[bytearray] = []
    for _, value, cost in candidates:
        row = bytearray(limit + 1)
        for b in range(limit, cost - 1, -1):
            with_it = best[b - cost] + value
            if with_it > best[b]:
                best[b] = with_it
                row[b] = 1
        took.append(row)
    chosen = []
    b = limit
    for index in range(len(candidates) - 1, -1, -1):
        if took[index][b]:
            item, _, cost = candidates[index]
            chosen.append(item["id"])
            b -= cost
    chosen.sort()
    price = sum(p["price_cents"] for p in _catalog() if p["id"] in set(chosen))
    return {
        "product": anchor["id"],
        "bundle": chosen,
        "affinity": best[limit],
        "bundle_price_cents": price,
        "offer_price_cents": round(price * (1 - BUNDLE_DISCOUNT)),
    }
