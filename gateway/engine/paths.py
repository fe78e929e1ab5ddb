"""Dotted paths into JSON values, with `*` and list indexes: `items.*.price`, `schools.42`.

One syntax for every place a config names a place in a JSON value (`target`, `allow`,
`deny`, `for_each`, `join`, `shape`, and the fields of a template ref):

* `a.b` walks into objects;
* a number (`a.0`) is a list index when the value there is a list (a key otherwise);
* `*` is every element of a list, or every value of an object (KrakenD's flatmap notation).

Reading (`matches`) yields each place that exists with its *concrete* location (list indexes
as ints, keys as strs), so a later step can write to exactly that place. Writing
(`update_at`) is functional: it copies only the containers on the way to the places it
changes and never mutates its input, so results shared between calls (deduplicated element
answers, the `calls` source) are never changed behind anyone's back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from gateway.types import JSON

WILDCARD = "*"

Path = tuple[str, ...]
"""A parsed config path: names, digit strings and `*`."""
Location = tuple[str | int, ...]
"""A concrete place in one value: keys (str) and list indexes (int), no wildcards."""


def path_problem(text: str) -> str | None:
    """Why `text` is not a well-formed path, or None when it is."""
    if not text:
        return "empty path"
    for segment in text.split("."):
        if not segment:
            return f"{text!r}: empty segment (a leading, trailing or doubled '.')"
        if WILDCARD in segment and segment != WILDCARD:
            return f"{text!r}: `*` must be a whole segment (`items.*.id`), not part of {segment!r}"
    return None


def parse_path(text: str | None) -> Path:
    """'a.*.b' -> ('a', '*', 'b'); None or '' -> () (the value itself). Checked paths only."""
    return tuple(text.split(".")) if text else ()


def has_wildcard(path: Path) -> bool:
    return WILDCARD in path


def _index(segment: str | int, length: int) -> int | None:
    """The list index a segment names, if it names one inside a list of `length`."""
    if isinstance(segment, int):
        index: int = segment
    elif segment.isascii() and segment.isdigit():
        index = int(segment)
    else:
        return None
    return index if 0 <= index < length else None


def matches(value: JSON, path: Path, at: Location = ()) -> Iterator[tuple[Location, JSON]]:
    """Every place `path` reaches in `value` that exists, in document order."""
    if not path:
        yield at, value
        return
    head, rest = path[0], path[1:]
    if head == WILDCARD:
        if isinstance(value, list):
            for index, item in enumerate(value):
                yield from matches(item, rest, (*at, index))
        elif isinstance(value, dict):
            for key, item in value.items():
                yield from matches(item, rest, (*at, key))
        return
    if isinstance(value, dict):
        if head in value:
            yield from matches(value[head], rest, (*at, head))
    elif isinstance(value, list):
        position = _index(head, len(value))
        if position is not None:
            yield from matches(value[position], rest, (*at, position))


def get(value: JSON, path: Path | Location) -> JSON:
    """The value at a path without wildcards; KeyError when it is not there."""
    current = value
    for segment in path:
        if isinstance(current, dict) and isinstance(segment, str) and segment in current:
            current = current[segment]
        elif isinstance(current, list) and (index := _index(segment, len(current))) is not None:
            current = current[index]
        else:
            raise KeyError(segment)
    return current


def update_at(
    value: JSON,
    path: Path | Location,
    change: Callable[[JSON], JSON],
    *,
    create: bool = False,
) -> JSON:
    """A copy of `value` where `change` replaced every place `path` reaches.

    Places that do not exist are left alone, unless `create` is set: then missing object
    keys on the way (not wildcards, not list indexes) are created as empty objects.
    """
    if not path:
        return change(value)
    head, rest = path[0], path[1:]
    if head == WILDCARD:
        if isinstance(value, list):
            return [update_at(item, rest, change, create=create) for item in value]
        if isinstance(value, dict):
            return {k: update_at(v, rest, change, create=create) for k, v in value.items()}
        return value
    if isinstance(value, dict) and isinstance(head, str):
        if head in value:
            return {**value, head: update_at(value[head], rest, change, create=create)}
        if create:
            return {**value, head: update_at({}, rest, change, create=create)}
        return value
    if isinstance(value, list):
        index = _index(head, len(value))
        if index is None:
            return value
        copy = list(value)
        copy[index] = update_at(value[index], rest, change, create=create)
        return copy
    return value


def put(value: JSON, path: Path | Location, new: Any) -> JSON:
    """A copy of `value` with `new` at a path without wildcards; missing objects on the way
    are created, a scalar or a missing list index on the way leaves `value` as it is."""
    if not path:
        return new
    *parents, last = path

    def place(container: JSON) -> JSON:
        if isinstance(container, dict) and isinstance(last, str):
            return {**container, last: new}
        if isinstance(container, list) and (index := _index(last, len(container))) is not None:
            copy = list(container)
            copy[index] = new
            return copy
        return container

    return update_at(value, tuple(parents), place, create=True)


def delete(value: JSON, path: Path) -> JSON:
    """A copy of `value` without what the path's last segment names, at every place.

    `a.b.c` deletes `c` and keeps `a.b`; `list.0` removes the first element; `a.*` empties
    `a`. What does not exist is left alone.
    """
    if not path:
        return value
    *parents, last = path

    def remove(container: JSON) -> JSON:
        if last == WILDCARD:
            if isinstance(container, list):
                return []
            return {} if isinstance(container, dict) else container
        if isinstance(container, dict):
            if last not in container:
                return container
            return {k: v for k, v in container.items() if k != last}
        if isinstance(container, list) and (index := _index(last, len(container))) is not None:
            return container[:index] + container[index + 1 :]
        return container

    return update_at(value, tuple(parents), remove)
