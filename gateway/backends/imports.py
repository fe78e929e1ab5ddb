"""Python objects named by import path (`package.module:attribute`), as legacy and compute
backends name their client class or function (the `target` field of such a backend).

Resolved once at start-up (and by `gateway check`), so a typo is a config error with its
location rather than a failure on the first request.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from gateway.errors import ImportPathError


def resolve_import(path: str) -> Any:
    """The object named by `module:attribute` (the attribute may be dotted)."""
    module_name, _, attribute = path.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportPathError(f"cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ImportPathError(f"{module_name!r} has no attribute {attribute!r}") from None
    if not callable(found):
        raise ImportPathError(f"{path!r} is not callable")
    return found


def is_class(found: Any) -> bool:
    """True for a class (built once; calls name one of its methods)."""
    return inspect.isclass(found)


def has_method(cls: Any, method: str) -> bool:
    """True when instances of `cls` have a public callable `method`."""
    return not method.startswith("_") and callable(getattr(cls, method, None))


def picklable_function(found: Any) -> bool:
    """True for a module-level function, which a process pool can send to a worker by name."""
    return inspect.isfunction(found) and "<locals>" not in found.__qualname__
