"""What runs inside a compute worker process: only light imports, since each worker is spawned.

The gateway sends a target's import path and the call's arguments; the worker resolves the
function once, calls it and sends back JSON bytes (cheap to pickle, and a result that is not
JSON fails its own call here instead of the merge on the event loop).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from gateway.errors import BadBody, TargetFailed
from gateway.targets import resolve

_resolved: dict[str, Callable[..., Any]] = {}


def _target(path: str) -> Callable[..., Any]:
    found = _resolved.get(path)
    if found is None:
        found = _resolved[path] = resolve(path)
    return found


def warm(paths: tuple[str, ...]) -> int:
    """Import the targets ahead of the first call; returns this worker's PID."""
    import os

    for path in paths:
        _target(path)
    return os.getpid()


def run_target(path: str, args: Mapping[str, Any]) -> bytes:
    """Call the function named by `path` with `args` -> its result as JSON bytes."""
    try:
        result = _target(path)(**args)
    except Exception as exc:  # the function's own failure is this call's failure
        raise TargetFailed(f"{path}: {type(exc).__name__}: {exc}") from None
    try:
        return orjson.dumps(result)
    except TypeError as exc:
        raise BadBody(f"{path} returned a value that is not JSON: {exc}") from None
