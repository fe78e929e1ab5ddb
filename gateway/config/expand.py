"""Values from outside the file: `${NAME}`, `${NAME:-default}` and `${file:/path}` in any
string value of a routes file, expanded once, when it is loaded.

* `${NAME}` is the environment variable NAME; unset (and no default) is a problem naming the
  field, so `gateway check` fails before anything is served.
* `${NAME:-default}` falls back to `default` when NAME is unset or empty (as in a shell).
* `${file:/run/secrets/token}` is the file's text without its final newline: Kubernetes
  mounts secrets as files.
* `$${` is a literal `${`.

Keys are never expanded, only values, and the result is not expanded again (a value taken
from the environment can hold `${` safely). `Expanded.secrets` remembers the values that came
from files, so `gateway check --show` can mask them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_REFERENCE = re.compile(r"\$\$\{|\$\{([^{}]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_FILE_VALUE_BYTES = 64 * 1024
"""A `${file:...}` value is a secret or a setting, not a document: larger is a problem."""


@dataclass(slots=True)
class Expanded:
    """The file's data with every reference replaced, and what went wrong where."""

    data: Any
    problems: list[tuple[str, str]] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)


def expand(data: Any, environ: Mapping[str, str], base: Path) -> Expanded:
    """Expand every string value of `data` (YAML as loaded); `base` is where relative
    `${file:...}` paths start (the routes file's directory)."""
    result = Expanded(None)
    result.data = _walk(data, "", environ, base, result)
    return result


def _walk(value: Any, where: str, environ: Mapping[str, str], base: Path, out: Expanded) -> Any:
    if isinstance(value, str):
        return _expand_text(value, where, environ, base, out) if "$" in value else value
    if isinstance(value, dict):
        return {
            key: _walk(item, _join(where, str(key)), environ, base, out)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_walk(item, f"{where}[{i}]", environ, base, out) for i, item in enumerate(value)]
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _expand_text(
    text: str, where: str, environ: Mapping[str, str], base: Path, out: Expanded
) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        body = match.group(1)
        if body.startswith("file:"):
            return _read_file(body[5:], where, base, out)
        name, sep, default = body.partition(":-")
        if not _NAME.match(name):
            out.problems.append((where, f"${{{body}}}: not a variable name (use ${{NAME}})"))
            return match.group(0)
        value = environ.get(name)
        if sep and not value:
            return default
        if value is None:
            out.problems.append((where, f"${{{name}}} is not set (and has no default)"))
            return match.group(0)
        return value

    return _REFERENCE.sub(replace, text)


def _read_file(path_text: str, where: str, base: Path, out: Expanded) -> str:
    path = Path(path_text)
    if not path.is_absolute():
        path = base / path
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_VALUE_BYTES + 1)
    except OSError as exc:
        out.problems.append((where, f"${{file:{path_text}}}: cannot read: {exc.strerror or exc}"))
        return ""
    if len(data) > MAX_FILE_VALUE_BYTES:
        out.problems.append(
            (where, f"${{file:{path_text}}}: larger than {MAX_FILE_VALUE_BYTES} bytes")
        )
        return ""
    try:
        value = data.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        out.problems.append((where, f"${{file:{path_text}}}: not UTF-8 text"))
        return ""
    out.secrets.add(value)
    return value
