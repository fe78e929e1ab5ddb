"""What runs inside a compute worker process: only light imports, since each worker is spawned.

The gateway sends a function's import path and the call's arguments; the worker resolves the
function once, calls it and sends back JSON bytes (cheap to pickle, and a result that is not
JSON fails its own call here instead of the merge on the event loop).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from gateway.backends.imports import resolve_import
from gateway.errors import BadBody, FunctionFailed

_resolved: dict[str, Callable[..., Any]] = {}


def _function(path: str) -> Callable[..., Any]:
    found = _resolved.get(path)
    if found is None:
        found = _resolved[path] = resolve_import(path)
    return found


def warm(paths: tuple[str, ...]) -> int:
    """Import the functions ahead of the first call; returns this worker's PID."""
    import os

    for path in paths:
        _function(path)
    return os.getpid()


def run_function(path: str, args: Mapping[str, Any]) -> bytes:
    """Call the function named by `path` with `args` -> its result as JSON bytes."""
    try:
        result = _function(path)(**args)
    except Exception as exc:  # the function's own failure is this call's failure
        raise FunctionFailed(f"{path}: {type(exc).__name__}", details=str(exc)) from None
    try:
        return orjson.dumps(result)
    except TypeError as exc:
        raise BadBody(f"{path} returned a value that is not JSON: {exc}") from None
