"""Array shaping: move, del, append, flatten, sort and limit over `*` paths.

What KrakenD's `flatmap_filter` does (move / del / append), plus the three operations a list
page needs (flatten, sort, limit). A call's `shape:` runs on its result; an endpoint's
`shape:` runs on the merged body, last. Each operation is a pure function of the value (see
`gateway.engine.paths`: nothing is mutated, only the containers on the way are copied), and
a place that does not exist is left alone, so shaping never fails a call: an upstream that
changes its answer gets an answer shaped as far as it still fits.

Within one `shape:` mapping the operations run in this order: move (in the order written),
del, append, flatten, sort, limit. A list of mappings runs them one after the other, for any
other order (KrakenD's filters are such a list).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.config.shaping import Shape, ShapeSpec
from gateway.engine.paths import WILDCARD, Path, delete, get, matches, parse_path, put, update_at
from gateway.types import JSON


@dataclass(frozen=True, slots=True)
class Move:
    """Move (rename, nest, extract) what is at `source` to `target`.

    With `*`s both paths share everything up to their last `*` (config checks it), and the
    move happens inside each element matched there: `a.*.b1.*.c -> a.*.b1.*.d` renames `c`
    in every `b1` element.
    """

    source: Path
    target: Path

    def apply(self, value: JSON) -> JSON:
        cut = _after_last_wildcard(self.source)
        source, target = self.source[cut:], self.target[cut:]

        def move(container: JSON) -> JSON:
            try:
                found = get(container, source)
            except KeyError:
                return container
            return put(delete(container, source), target, found)

        return update_at(value, self.source[:cut], move)


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete what each path names (`a.b.c` deletes `c`, `list.0` the first element)."""

    paths: tuple[Path, ...]

    def apply(self, value: JSON) -> JSON:
        for path in self.paths:
            value = delete(value, path)
        return value


@dataclass(frozen=True, slots=True)
class Append:
    """`target` becomes the concatenation of the `sources`, in order; each source other
    than the target is removed (moved into it). A source that is not a list adds itself as
    one element; a missing or null one adds nothing."""

    target: Path
    sources: tuple[Path, ...]

    def apply(self, value: JSON) -> JSON:
        joined: list[Any] = []
        for source in self.sources:
            for _, found in matches(value, source):
                if isinstance(found, list):
                    joined.extend(found)
                elif found is not None:
                    joined.append(found)
        for source in self.sources:
            if source != self.target:
                value = delete(value, source)
        return put(value, self.target, joined)


@dataclass(frozen=True, slots=True)
class Flatten:
    """The list at `path` (each one, with `*`) loses one level: its list elements are
    replaced by their elements, in order."""

    path: Path

    def apply(self, value: JSON) -> JSON:
        def flatten(found: JSON) -> JSON:
            if not isinstance(found, list):
                return found
            flat: list[Any] = []
            for item in found:
                if isinstance(item, list):
                    flat.extend(item)
                else:
                    flat.append(item)
            return flat

        return update_at(value, self.path, flatten)


@dataclass(frozen=True, slots=True)
class Sort:
    """Sort the list at `path` by the field `by` of each element (the elements themselves
    when `by` is empty). Numbers before texts before booleans before anything else; elements
    without the field (or with null) go last in both orders; equal elements keep their order.
    """

    path: Path
    by: Path = ()
    descending: bool = False

    def apply(self, value: JSON) -> JSON:
        def sort(found: JSON) -> JSON:
            if not isinstance(found, list):
                return found
            keyed: list[tuple[tuple[int, Any], Any]] = []
            last: list[Any] = []
            for item in found:
                try:
                    field = get(item, self.by)
                except KeyError:
                    field = None
                if field is None:
                    last.append(item)
                else:
                    keyed.append((_sort_key(field), item))
            keyed.sort(key=lambda pair: pair[0], reverse=self.descending)
            return [item for _, item in keyed] + last

        return update_at(value, self.path, sort)


@dataclass(frozen=True, slots=True)
class Limit:
    """Keep the first `n` elements of the list at `path`."""

    path: Path
    n: int

    def apply(self, value: JSON) -> JSON:
        return update_at(value, self.path, lambda found: _head(found, self.n))


Operation = Move | Delete | Append | Flatten | Sort | Limit
Shaping = tuple[Operation, ...]
"""A `shape:` as the engine runs it: operations in order."""


def reshape(value: JSON, shaping: Sequence[Operation]) -> JSON:
    """`value` after every operation of `shaping`, in order."""
    for operation in shaping:
        value = operation.apply(value)
    return value


def _after_last_wildcard(path: Path) -> int:
    """How many segments lead up to (and include) the last `*`; 0 without one."""
    for index in range(len(path) - 1, -1, -1):
        if path[index] == WILDCARD:
            return index + 1
    return 0


def _head(found: JSON, n: int) -> JSON:
    return found[:n] if isinstance(found, list) else found


def _sort_key(field: JSON) -> tuple[int, Any]:
    if isinstance(field, bool):
        return (2, field)
    if isinstance(field, int | float):
        return (0, field)
    if isinstance(field, str):
        return (1, field)
    return (3, orjson.dumps(field, option=orjson.OPT_SORT_KEYS))


def plan_shaping(spec: Shape | None) -> Shaping:
    """The operations of a (checked) `shape:`, in the order they run."""
    steps = [] if spec is None else spec if isinstance(spec, list) else [spec]
    return tuple(operation for step in steps for operation in _operations(step))


def _operations(step: ShapeSpec) -> list[Operation]:
    out: list[Operation] = [
        Move(parse_path(source), parse_path(target)) for source, target in step.move.items()
    ]
    if step.delete:
        out.append(Delete(tuple(parse_path(path) for path in step.delete)))
    for target, sources in step.append.items():
        out.append(Append(parse_path(target), tuple(parse_path(s) for s in sources)))
    flatten = [step.flatten] if isinstance(step.flatten, str) else step.flatten or []
    out.extend(Flatten(parse_path(path)) for path in flatten)
    if step.sort is not None:
        sort = step.sort
        out.append(Sort(parse_path(sort.path), parse_path(sort.by), sort.order == "desc"))
    if step.limit is not None:
        out.append(Limit(parse_path(step.limit.path), step.limit.n))
    return out
