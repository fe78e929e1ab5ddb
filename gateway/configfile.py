"""Reading a config file: YAML -> a validated `GatewaySpec`, or a `ConfigError` listing problems.

Every line names the file and the exact place, e.g.
`demo.yaml: endpoints[2].calls[0].backend: unknown backend 'catlog' (known: catalog, reviews)`,
and YAML syntax errors give line and column. No traceback ever reaches the user.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.errors import ConfigError
from gateway.spec import GatewaySpec, check_references

_BACKEND_KINDS = frozenset({"http", "postgres", "legacy", "compute"})

_FRIENDLY = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
}


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false (any case) are booleans.

    PyYAML follows YAML 1.1, where on/off/yes/no/y/n are booleans too: the key of
    `retry: {on: [503]}` would become True, and `query: {lang: no}` the value False.
    Fields that are booleans still accept "yes"/"on" (pydantic converts them).
    """


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_spec(path: str | Path) -> GatewaySpec:
    """Parse and validate the config at `path`; raise ConfigError listing every problem."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read: {exc.strerror or exc}"]) from None
    return parse_spec(text, name)


def parse_spec(text: str, name: str) -> GatewaySpec:
    """Validate config text; `name` is used in messages."""
    try:
        raw: Any = yaml.load(text, Loader=_Loader)  # a SafeLoader: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        raise ConfigError([f"{where}: YAML syntax error: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{name}: YAML error: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(
            [f"{name}: the file must be a mapping with `version`, `backends`, `endpoints`"]
        )
    try:
        spec = GatewaySpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([f"{name}: {line}" for line in _pydantic_lines(exc)]) from None
    problems = check_references(spec)
    if problems:
        raise ConfigError([f"{name}: {where}: {why}" for where, why in problems])
    return spec


def _pydantic_lines(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        location = format_location(error["loc"])
        message = _FRIENDLY.get(error["type"], error["msg"]).removeprefix("Value error, ")
        lines.append(f"{location}: {message}" if location else message)
    return lines


def format_location(loc: tuple[int | str, ...]) -> str:
    """('endpoints', 2, 'calls', 0, 'backend') -> 'endpoints[2].calls[0].backend'.

    pydantic puts the discriminator value of a tagged union into the location
    (`backends.db.postgres.dsn`); the user never wrote it, so it is dropped.
    """
    parts: list[str] = []
    for index, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif index == 2 and loc[0] == "backends" and item in _BACKEND_KINDS:
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)
