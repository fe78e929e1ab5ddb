"""Fanning one call out over a list: a `for_each` call runs once per element.

The list is a place in an earlier call's result (`for_each: calls.products`, after that
call's `target`); each element's request is rendered with the element as the `item` source
(`/authors/{item.author_id}`), so a call of any kind (HTTP, legacy, compute, SQL) can be
fanned out: its kind renders its own `args`/`params`. Identical element requests (compared
as `gateway.policies.coalesce` compares requests) are sent once, at most `concurrency` at a
time, each through the call's policy-wrapped `Call` (so every try has its timeout, retries,
breaker...). A failed element is a failure of that element only: the node still succeeds,
and says which elements failed (`Partial`), as `execute` turns failures into Outcomes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from gateway.engine.execute import Partial
from gateway.engine.merge import pick_field
from gateway.engine.paths import Location, Path, has_wildcard, matches
from gateway.engine.templates import Sources
from gateway.errors import CallError, MissingValue, TooManyItems
from gateway.policies.coalesce import coalesce_key
from gateway.types import JSON, BackendRequest, Call


@dataclass(frozen=True, slots=True)
class ForEach:
    """A call's `for_each`, resolved: the call whose result holds the list, where in it, and
    how the elements' results are placed and bounded."""

    source: str
    """The call whose result (after its `target`) holds the list."""
    path: Path
    """Where the list is in that result; () for the result itself."""
    into: Path | None
    """Each element gets its result under this key (None: the call's value is the list)."""
    concurrency: int
    max_items: int

    def __str__(self) -> str:
        return ".".join(("calls", self.source, *self.path))


def elements(value: JSON, path: Path, name: str = "the list") -> list[tuple[Location, JSON]]:
    """The elements a `for_each` (or a `join`'s `into`) names in `value`, with their places.

    Without `*` the path names one list, whose items are the elements (null: none; anything
    else fails the call). With `*` it names several places: each list found there gives its
    items, and anything else found there (but null) is one element itself.
    """
    found = list(matches(value, path))
    if not has_wildcard(path):
        if not found:
            raise MissingValue(f"{name} is not in the result")
        at, listed = found[0]
        if listed is None:
            return []
        if not isinstance(listed, list):
            raise MissingValue(f"{name} is not a list")
        return [((*at, index), item) for index, item in enumerate(listed)]
    out: list[tuple[Location, JSON]] = []
    for at, item in found:
        if isinstance(item, list):
            out.extend(((*at, index), inner) for index, inner in enumerate(item))
        elif item is not None:
            out.append((at, item))
    return out


async def run_for_each(
    plan: ForEach,
    sources: Sources,
    build: Callable[[Sources], BackendRequest],
    send: Call,
    pick: Path,
) -> Partial:
    """Run the call once per element; `build` renders one request from the sources with the
    element added as `item`, `send` is the call's policy-wrapped Call, `pick` its `target`.

    TooManyItems (the whole call fails, nothing is sent) when the list is over `max_items`;
    MissingValue when the list is not there. Anything else fails one element only.
    """
    listed = elements(sources["calls"][plan.source], plan.path, str(plan))
    if len(listed) > plan.max_items:
        raise TooManyItems(
            f"{plan} has {len(listed)} elements, more than max_items ({plan.max_items}): "
            "nothing was sent"
        )
    unique: list[BackendRequest] = []
    slots: dict[Hashable, int] = {}
    slot_of: list[int | CallError] = []  # per element: its request's slot, or why none
    for _, element in listed:
        try:
            request = build({**sources, "item": element})
        except MissingValue as exc:
            slot_of.append(exc)
            continue
        key = coalesce_key(request)
        known = slots.get(key) if key is not None else None
        if known is None:
            known = len(unique)
            unique.append(request)
            if key is not None:
                slots[key] = known
        slot_of.append(known)

    answers: list[JSON | CallError] = [None] * len(unique)
    pending = iter(range(len(unique)))

    async def worker() -> None:
        # `concurrency` workers share one iterator of slots: at most that many in flight
        for slot in pending:
            try:
                response = await send(unique[slot])
                answers[slot] = pick_field(response.body, pick)
            except CallError as exc:
                answers[slot] = exc

    async with asyncio.TaskGroup() as group:
        for _ in range(min(plan.concurrency, len(unique))):
            group.create_task(worker())

    values: list[JSON] = []
    failed: dict[int, CallError] = {}
    for index, slot in enumerate(slot_of):
        answer = slot if isinstance(slot, CallError) else answers[slot]
        if isinstance(answer, CallError):
            failed[index] = answer
            values.append(None)
        else:
            values.append(answer)
    return Partial(values, failed, sent=len(unique))
