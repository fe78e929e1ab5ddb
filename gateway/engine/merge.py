"""Shaping call results and merging them into one response body.

Each successful call's JSON goes through pick -> allow/deny -> rename -> group, then the
object results are merged shallowly in config order, so on a key collision the call listed
later always wins (never "whichever arrived last"). A non-object result without `group` is
placed under the call's name. Two calls with the same `group` merge into one object.
Paths may hold `*` (every element of a list, every value of an object); in allow/deny a list
is crossed whether or not a `*` says so, and a number names a key (`target` indexes lists).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.engine.paths import WILDCARD, get, matches
from gateway.errors import BadBody
from gateway.types import JSON


@dataclass(frozen=True, slots=True)
class Shape:
    """The resolved transforms of one call."""

    name: str
    pick: tuple[str, ...] = ()
    """The field of the answer the call keeps (config: `target`), as a path."""
    allow: tuple[tuple[str, ...], ...] | None = None
    deny: tuple[tuple[str, ...], ...] = ()
    rename: tuple[tuple[str, str], ...] = ()
    group: str | None = None


def dotted(path: str | None) -> tuple[str, ...]:
    """'a.b.c' -> ('a', 'b', 'c'); None or '' -> ()."""
    return tuple(path.split(".")) if path else ()


def pick_field(body: JSON, path: tuple[str, ...]) -> JSON:
    """The field at `path` of an answer (the call's `target`); BadBody when it is not there.

    A number indexes a list; with `*` the value is the list of every match (the part before
    the first `*` must be there).
    """
    if WILDCARD in path:
        pick_field(body, path[: path.index(WILDCARD)])
        return [found for _, found in matches(body, path)]
    try:
        return get(body, path)
    except KeyError:
        raise BadBody(f"response has no field {'.'.join(path)!r}") from None


def transform(value: JSON, shape: Shape) -> JSON:
    """allow/deny and rename; lists of objects are transformed element by element."""
    if isinstance(value, list):
        return [transform(item, shape) for item in value]
    if not isinstance(value, dict):
        return value
    if shape.allow is not None:
        value = _allow(value, shape.allow)
    for path in shape.deny:
        value = _deny(value, path)
    if shape.rename:
        renames = dict(shape.rename)
        value = {renames.get(key, key): item for key, item in value.items()}
    return value


def _allow(value: JSON, paths: Iterable[tuple[str, ...]]) -> JSON:
    if isinstance(value, list):
        # a list is crossed as if it were not there; a `*` says so explicitly
        inner = [path[1:] if path[0] == WILDCARD else path for path in paths]
        if not all(inner):
            return value  # `items.*` keeps every element whole
        return [_allow(item, inner) for item in value]
    if not isinstance(value, dict):
        return value
    kept: dict[str, Any] = {}
    nested: dict[str, list[tuple[str, ...]]] = {}
    for path in paths:
        head, rest = path[0], path[1:]
        for key in value if head == WILDCARD else (head,) if head in value else ():
            if rest:
                nested.setdefault(key, []).append(rest)
            else:
                kept[key] = value[key]
    for head, rests in nested.items():
        if head not in kept:
            kept[head] = _allow(value[head], rests)
    # keep the upstream's key order, which frontends and diffs find natural
    return {key: kept[key] for key in value if key in kept}


def _deny(value: JSON, path: tuple[str, ...]) -> JSON:
    if isinstance(value, list):
        inner = path[1:] if path[0] == WILDCARD else path
        if not inner:
            return []  # `items.*` denies every element
        return [_deny(item, inner) for item in value]
    if isinstance(value, dict) and path[0] == WILDCARD:
        if len(path) == 1:
            return {}
        return {key: _deny(item, path[1:]) for key, item in value.items()}
    if not isinstance(value, dict) or path[0] not in value:
        return value
    if len(path) == 1:
        return {key: item for key, item in value.items() if key != path[0]}
    return {**value, path[0]: _deny(value[path[0]], path[1:])}


def merge(results: Sequence[tuple[Shape, JSON]]) -> dict[str, Any]:
    """Merge shaped results, given in config order; later calls win collisions."""
    body: dict[str, Any] = {}
    for shape, value in results:
        if shape.group is not None:
            existing = body.get(shape.group)
            if isinstance(existing, dict) and isinstance(value, dict):
                body[shape.group] = {**existing, **value}
            else:
                body[shape.group] = value
        elif isinstance(value, dict):
            body.update(value)
        else:
            body[shape.name] = value
    return body
