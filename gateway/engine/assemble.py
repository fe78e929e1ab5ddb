"""The response body from the outcomes: results shaped, attached into each other, merged.

For every successful call, in this order:

1. `target` (already done when the call ran) -> allow/deny -> rename: what the client sees;
2. attachments: a `for_each` call with `into` puts each element's result into the element of
   its source list, a `join` call puts its matching elements into another call's elements.
   They go into the source call's *visible* value (after its allow/deny/rename, so `allow`
   need not name the attached key), at the place the element has in the source's result
   (through its `rename`). Calls attach in reverse config order, so a chain (authors into
   products, then publishers into authors) is complete before it is attached further up;
3. the call's `shape:` (for a `for_each` call, on each element's result), then `group` and
   the merge (gateway.engine.merge), then the endpoint's `shape:` on the merged body.

A failed element gets no key (null is what an upstream answered, absent is a failure; with
`error_details`, `_errors` lists the failed indexes); an element whose `join` has no match
gets no key either (`many: true`: an empty list).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from gateway.engine.execute import Outcome
from gateway.engine.foreach import elements
from gateway.engine.merge import Shape, merge, transform
from gateway.engine.paths import Location, Path, get, matches
from gateway.engine.plan import CallPlan, Join
from gateway.engine.shape import Shaping, reshape
from gateway.engine.templates import as_text
from gateway.errors import MissingValue
from gateway.types import JSON


def assemble(
    calls: Sequence[CallPlan], outcomes: Mapping[str, Outcome], shaping: Shaping = ()
) -> dict[str, Any]:
    """The merged body of the successful calls (see the module docstring for the order)."""
    ok = [call for call in calls if outcomes[call.name].ok]
    if not any(call.attached or call.shaping for call in ok) and not shaping:
        # the common case costs what it did before collections existed
        return merge(
            [(call.shape, transform(outcomes[call.name].value, call.shape)) for call in ok]
        )
    visible = {call.name: transform(outcomes[call.name].value, call.shape) for call in ok}
    by_name = {call.name: call for call in ok}
    owned: set[str] = set()
    for call in reversed(ok):
        if call.for_each is not None and call.for_each.into is not None:
            _attach_elements(call, call.for_each.into, by_name, outcomes, visible, owned)
        elif call.join is not None:
            _attach_join(call, call.join, by_name, outcomes, visible, owned)
    parts = []
    for call in ok:
        if call.attached:
            continue
        value = visible[call.name]
        if call.for_each is not None:
            value = [reshape(item, call.shaping) for item in value]
        else:
            value = reshape(value, call.shaping)
        parts.append((call.shape, value))
    return reshape(merge(parts), shaping)  # type: ignore[no-any-return]


def _attach_elements(
    call: CallPlan,
    into: Path,
    calls: Mapping[str, CallPlan],
    outcomes: Mapping[str, Outcome],
    visible: dict[str, JSON],
    owned: set[str],
) -> None:
    """Each element's result of a `for_each` call into its element of the source list."""
    assert call.for_each is not None
    source = calls.get(call.for_each.source)
    if source is None:
        return
    try:
        listed = elements(outcomes[source.name].value, call.for_each.path)  # as when it ran
    except MissingValue:
        return
    failed = outcomes[call.name].failed_elements
    results = visible[call.name]
    target = _own(visible, source.name, owned)
    for index, (at, _) in enumerate(listed):
        if index not in failed:
            result = reshape(results[index], call.shaping)
            _place(target, _visible(source.shape, at), into, result)


def _attach_join(
    call: CallPlan,
    join: Join,
    calls: Mapping[str, CallPlan],
    outcomes: Mapping[str, Outcome],
    visible: dict[str, JSON],
    owned: set[str],
) -> None:
    """Each element of the receiving list gets this call's element(s) whose `key` equals
    its `on` (compared as text: 7 matches "7")."""
    receiver = calls.get(join.call)
    if receiver is None:
        return
    by_key: dict[str, list[JSON]] = {}
    for _, raw in matches(outcomes[call.name].value, ("*",)):
        key = _key(raw, join.key)
        if key is not None:
            by_key.setdefault(key, []).append(raw)
    try:
        listed = elements(outcomes[receiver.name].value, join.path)
    except MissingValue:
        return
    target = _own(visible, receiver.name, owned)
    for at, element in listed:
        key = _key(element, join.on)
        found = by_key.get(key, []) if key is not None else []
        views = [reshape(transform(raw, call.shape), call.shaping) for raw in found]
        if join.many:
            _place(target, _visible(receiver.shape, at), join.attach_as, views)
        elif views:
            _place(target, _visible(receiver.shape, at), join.attach_as, views[0])


def _key(value: JSON, path: Path) -> str | None:
    try:
        found = get(value, path)
    except KeyError:
        return None
    if found is None or isinstance(found, dict | list):
        return None
    return as_text(found)


def _own(visible: dict[str, JSON], name: str, owned: set[str]) -> JSON:
    """The call's visible value, copied once before anything is attached into it: results
    may be shared (a deduplicated answer sits in several elements; a call without allow,
    deny or rename shows its raw result), and attaching writes in place."""
    if name not in owned:
        visible[name] = orjson.loads(orjson.dumps(visible[name]))
        owned.add(name)
    return visible[name]


def _visible(shape: Shape, at: Location) -> Location:
    """Where a place of a call's result is in what the client sees: `rename` changes the
    first key (of the result, or of each element of a list result)."""
    if not shape.rename:
        return at
    renames = dict(shape.rename)
    for index, segment in enumerate(at):
        if isinstance(segment, str):
            return (*at[:index], renames.get(segment, segment), *at[index + 1 :])
    return at


def _place(root: JSON, at: Location, key: Path, value: JSON) -> None:
    """Put `value` under `key` of the object at `at` (in place); a place that is not there
    any more (allow/deny removed it) or is not an object is left alone."""
    node = root
    for segment in at:
        inside_list = isinstance(node, list) and isinstance(segment, int) and segment < len(node)
        if not inside_list and not (isinstance(node, dict) and segment in node):
            return
        node = node[segment]
    *parents, last = key
    for name in parents:
        if not isinstance(node, dict):
            return
        node = node.setdefault(name, {})
    if isinstance(node, dict):
        node[last] = value
