"""Cross-reference checks of collections: `for_each`, `into`, `join`, `shape:` and the `*`
paths of `target`, `allow` and `deny`.

A `for_each` names a list in an *earlier* call's result (`calls.<name>[.path]`), `into` and
`join` attach into a list (known not to be one: a `result: one|value` SQL call), the
for_each-only fields are set on for_each calls only, every path is well-formed, and a `move`
keeps its `*`s where they were (KrakenD's rule: only what follows the last `*` may change).
"""

from __future__ import annotations

from gateway.config.models import CallSpec, EndpointSpec, Problem
from gateway.config.shaping import Shape, ShapeSpec
from gateway.engine.paths import WILDCARD, path_problem

FOR_EACH_ONLY = ("into", "concurrency", "max_items")
"""Fields that only mean something on a `for_each` call."""


def implied_needs(call: CallSpec) -> list[str]:
    """The calls a call needs without saying so: its `for_each` source, its `join` target."""
    implied = []
    if call.for_each and call.for_each.startswith("calls."):
        implied.append(call.for_each.split(".")[1])
    if call.join is not None:
        implied.append(call.join.into.split(".")[0])
    return [name for name in implied if name and name not in call.needs]


def check_collections(endpoint: EndpointSpec, where: str) -> list[Problem]:
    """Every collections problem of one endpoint, each with its exact location."""
    problems: list[Problem] = []
    for index, call in enumerate(endpoint.calls):
        at = f"{where}.calls[{index}]"
        problems += _check_paths(call, at)
        problems += _check_for_each(call, endpoint.calls, index, at)
        problems += _check_join(call, endpoint.calls, index, at)
        problems += check_shape(call.shape, f"{at}.shape")
    problems += check_shape(endpoint.shape, f"{where}.shape")
    streamed = [c for c in endpoint.calls if c.result == "stream"]
    if streamed and endpoint.shape is not None:
        problems.append((f"{where}.shape", "a streamed (`result: stream`) answer is not shaped"))
    for call in streamed:
        used = [f for f in ("for_each", "join", "shape") if getattr(call, f) is not None]
        if used:
            at = f"{where}.calls[{endpoint.calls.index(call)}]"
            problems.append((f"{at}.{used[0]}", "a `stream` call sends its rows as they come"))
    return problems


def _check_paths(call: CallSpec, where: str) -> list[Problem]:
    named = [("target", call.pick)] if call.pick else []
    named += [(f"allow[{i}]", path) for i, path in enumerate(call.allow or ())]
    named += [(f"deny[{i}]", path) for i, path in enumerate(call.deny or ())]
    return [(f"{where}.{field}", why) for field, path in named if (why := path_problem(path))]


def _earlier(
    name: str, calls: list[CallSpec], index: int, field: str, where: str
) -> tuple[CallSpec | None, list[Problem]]:
    """The earlier call named `name`, or the problem with naming it."""
    names = [c.name for c in calls]
    if name == calls[index].name:
        return None, [(where, f"{field} cannot name the call's own result")]
    if name not in names:
        return None, [(where, f"unknown call {name!r} (calls: {', '.join(map(str, names))})")]
    if names.index(name) > index:
        return None, [(where, f"{name!r} is listed after this call: {field} needs an earlier call")]
    return calls[names.index(name)], []


def _not_a_list(source: CallSpec, has_path: bool, where: str) -> list[Problem]:
    if not has_path and source.result in ("one", "value"):
        return [(where, f"{source.name!r} gives one value (`result: {source.result}`), not a list")]
    return []


def _check_for_each(call: CallSpec, calls: list[CallSpec], index: int, where: str) -> list[Problem]:
    given = call.model_fields_set
    if call.for_each is None:
        return [
            (f"{where}.{name}", f"`{name}` is for `for_each` calls only")
            for name in FOR_EACH_ONLY
            if name in given
        ]
    at = f"{where}.for_each"
    head, _, path = call.for_each.partition(".")
    name, _, rest = path.partition(".")
    if head != "calls" or not name:
        return [(at, "name a list in an earlier call's result: calls.<name>[.path]")]
    problems: list[Problem] = []
    if why := path_problem(call.for_each):
        problems.append((at, why))
    source, found = _earlier(name, calls, index, "for_each", at)
    problems += found
    if source is not None:
        problems += _not_a_list(source, bool(rest), at)
        if call.into is not None and source.join is not None:
            problems.append(
                (f"{where}.into", f"{name!r} is a join call: its elements go into other calls")
            )
    if call.join is not None:
        problems.append((where, "give `for_each` or `join`, not both"))
    if call.into is not None:
        problems += _key_problems(call.into, f"{where}.into")
        if call.group is not None:
            problems.append((f"{where}.group", f"with `into` the results go inside {name!r}"))
    return problems


def _check_join(call: CallSpec, calls: list[CallSpec], index: int, where: str) -> list[Problem]:
    join = call.join
    if join is None:
        return []
    at = f"{where}.join"
    name, _, path = join.into.partition(".")
    problems: list[Problem] = []
    if path and (why := path_problem(path)):
        problems.append((f"{at}.into", why))
    target, found = _earlier(name, calls, index, "join.into", f"{at}.into")
    problems += found
    if target is not None:
        problems += _not_a_list(target, bool(path), f"{at}.into")
        if target.join is not None:
            problems.append(
                (f"{at}.into", f"{name!r} is a join call: its elements go into other calls")
            )
    problems += _key_problems(join.on, f"{at}.on")
    problems += _key_problems(join.key, f"{at}.key")
    problems += _key_problems(join.attach_as, f"{at}.as")
    if call.group is not None:
        problems.append((f"{where}.group", f"with `join` the results go inside {name!r}"))
    return problems


def _key_problems(path: str, where: str) -> list[Problem]:
    """A field of one element: a well-formed path without `*`."""
    why = path_problem(path)
    if why:
        return [(where, why)]
    if WILDCARD in path.split("."):
        return [(where, f"{path!r} names one field of each element: no `*`")]
    return []


def check_shape(shape: Shape | None, where: str) -> list[Problem]:
    """The paths of a `shape:` (one mapping, or a list of them)."""
    if shape is None:
        return []
    if isinstance(shape, ShapeSpec):
        return _check_step(shape, where)
    return [p for i, step in enumerate(shape) for p in _check_step(step, f"{where}[{i}]")]


def _check_step(step: ShapeSpec, where: str) -> list[Problem]:
    problems: list[Problem] = []
    for source, target in step.move.items():
        problems += _check_move(source, target, f"{where}.move.{source}")
    for i, path in enumerate(step.delete):
        problems += _path(path, f"{where}.del[{i}]")
    for target, sources in step.append.items():
        problems += _key_problems(target, f"{where}.append.{target}")
        for i, path in enumerate(sources):
            problems += _path(path, f"{where}.append.{target}[{i}]")
    flatten = [step.flatten] if isinstance(step.flatten, str) else step.flatten or []
    for path in flatten:
        problems += _path(path, f"{where}.flatten")
    if step.sort is not None:
        if step.sort.path:
            problems += _path(step.sort.path, f"{where}.sort.path")
        if step.sort.by:
            problems += _key_problems(step.sort.by, f"{where}.sort.by")
    if step.limit is not None and step.limit.path:
        problems += _path(step.limit.path, f"{where}.limit.path")
    return problems


def _path(path: str, where: str) -> list[Problem]:
    why = path_problem(path)
    return [(where, why)] if why else []


def _check_move(source: str, target: str, where: str) -> list[Problem]:
    problems = _path(source, where) + _path(target, where)
    if problems:
        return problems
    src, dst = source.split("."), target.split(".")
    if src.count(WILDCARD) != dst.count(WILDCARD):
        return [(where, f"{source!r} -> {target!r}: both sides need as many `*`s")]
    if WILDCARD in src:
        cut = len(src) - src[::-1].index(WILDCARD)
        if src[:cut] != dst[:cut]:
            prefix = ".".join(src[:cut])
            return [
                (
                    where,
                    f"{source!r} -> {target!r}: both must start with {prefix!r} "
                    "(only what follows the last `*` may change)",
                )
            ]
    return problems
