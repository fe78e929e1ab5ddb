"""Shaping call results and merging them into one response body.

Each successful call's JSON goes through pick -> allow/deny -> rename -> group, then the
object results are merged shallowly in config order, so on a key collision the call listed
later always wins (never "whichever arrived last"). A non-object result without `group` is
placed under the call's name. Two calls with the same `group` merge into one object.
Paths may hold `*` (every element of a list, every value of an object); in allow/deny a list
is crossed whether or not a `*` says so, and a number names a key (`target` indexes lists).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
    allowing: Allowed | None = field(init=False, repr=False, compare=False)
    """`allow` compiled (None without it): what `_allow` works out from the paths for every
    value, worked out once."""
    renames: Mapping[str, str] = field(init=False, repr=False, compare=False)
    """`rename` as a mapping."""

    def __post_init__(self) -> None:
        allowing = Allowed(self.allow) if self.allow is not None else None
        object.__setattr__(self, "allowing", allowing)
        object.__setattr__(self, "renames", dict(self.rename))


class Allowed:
    """An `allow` list compiled at start-up: per object, the keys kept whole and the keys
    whose values are allowed further (each with its own `Allowed`), so a value is shaped in
    one pass over its keys. Paths with a `*` at some level are shaped from there on by
    `_allow` itself, which reads the keys a `*` matches from each value."""

    __slots__ = ("generic", "nested", "paths", "whole")

    def __init__(self, paths: tuple[tuple[str, ...], ...]) -> None:
        self.paths = paths
        self.generic = any(not path or path[0] == WILDCARD for path in paths)
        self.whole: frozenset[str] = frozenset()
        self.nested: dict[str, Allowed] = {}
        if self.generic:
            return
        self.whole = frozenset(path[0] for path in paths if len(path) == 1)
        rests: dict[str, list[tuple[str, ...]]] = {}
        for path in paths:
            if len(path) > 1 and path[0] not in self.whole:
                rests.setdefault(path[0], []).append(path[1:])
        self.nested = {head: Allowed(tuple(inner)) for head, inner in rests.items()}

    def __repr__(self) -> str:
        return f"<Allowed {['.'.join(path) for path in self.paths]}>"

    def apply(self, value: JSON) -> JSON:
        """What `_allow(value, self.paths)` gives."""
        if self.generic:
            return _allow(value, self.paths)
        if isinstance(value, list):  # without a `*` to strip, elements are allowed the same
            return [self.apply(item) for item in value]
        if not isinstance(value, dict):
            return value
        whole, nested = self.whole, self.nested
        kept: dict[str, Any] = {}
        for key, item in value.items():  # the upstream's key order, as `_allow` keeps it
            if key in whole:
                kept[key] = item
            else:
                inner = nested.get(key)
                if inner is not None:
                    kept[key] = inner.apply(item)
        return kept


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
    if shape.allowing is not None:
        value = shape.allowing.apply(value)
    for path in shape.deny:
        value = _deny(value, path)
    if shape.rename:
        renames = shape.renames
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
