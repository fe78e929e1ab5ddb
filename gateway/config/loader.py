"""Reading a config file: YAML 1.2 -> `${...}` values expanded (gateway/config/expand.py) ->
`include:`d files merged (gateway/config/include.py) -> a validated `GatewaySpec`, or a
`ConfigError` listing every problem.

Every line names the file and the exact place, e.g.
`demo.yaml: endpoints[2].calls[0].backend: unknown backend 'catlog' (known: catalog, reviews)`;
YAML syntax errors give line and column, an unknown field names the nearest valid one
(`routes: unknown field (did you mean 'endpoints'?)`). No traceback ever reaches the user.
Parsing is bounded whatever the file holds: aliases and the size they expand to are capped.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from gateway.backends.registry import kinds
from gateway.config.checks import check_references
from gateway.config.document import GatewaySpec, document_model
from gateway.config.edge import AUTH_KINDS
from gateway.config.expand import expand
from gateway.config.include import Document, Origins, merge
from gateway.config.settings import expansion_environment
from gateway.config.shaping import UNION_TAGS
from gateway.config.writes import load_schemas
from gateway.errors import ConfigError

MAX_ALIASES = 10_000
"""YAML aliases (`*name`) per file: shared retry settings need a few, not thousands."""
MAX_EXPANDED_NODES = 2_000_000
"""Nodes of the file once every alias is expanded (a billion-laughs file expands to 10^9)."""

_TAGGED = ("backends", "auth")
"""Sections whose entries are tagged unions picked by `kind:`."""

_FRIENDLY = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
}

SYNONYMS = {
    # what other gateways call our fields (KrakenD, Kong, Envoy), for "did you mean"
    "routes": "endpoints",
    "services": "backends",
    "upstreams": "backends",
    "clusters": "backends",
    "backend_url": "url",
    "host": "url",
    "hosts": "urls",
    "url_pattern": "path",
    "endpoint": "path",
    "timeout_ms": "timeout",
    "depends_on": "needs",
}


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false (any case) are booleans.

    PyYAML follows YAML 1.1, where on/off/yes/no/y/n are booleans too: the key of
    `retry: {on: [503]}` would become True, and `query: {lang: no}` the value False.
    Fields that are booleans still accept "yes"/"on" (pydantic converts them).
    Aliases are counted as they are composed (see `MAX_ALIASES`).
    """

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.MarkedYAMLError(
                    problem=f"more than {MAX_ALIASES} aliases", problem_mark=mark
                )
        return super().compose_node(parent, index)


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass(frozen=True, slots=True)
class Loaded:
    """A checked config: the spec, the merged data it came from, and the values that came
    from secret files (which `gateway check --show` masks)."""

    spec: GatewaySpec
    data: dict[str, Any]
    secrets: frozenset[str]
    files: tuple[str, ...] = ()
    """The files it was read from: the main one, then every included one (what to watch)."""


def load_spec(path: str | Path, environ: Mapping[str, str] | None = None) -> GatewaySpec:
    """Parse and validate the config at `path`; raise ConfigError listing every problem."""
    return load_config(path, environ).spec


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Loaded:
    """`load_spec`, keeping what `gateway check --show` prints."""
    return _load(_read_text(Path(path), str(path)), str(path), Path(path).parent, environ)


def parse_spec(
    text: str, name: str, *, base: Path | None = None, environ: Mapping[str, str] | None = None
) -> GatewaySpec:
    """Validate config text; `name` is used in messages, `base` is where its relative
    `include:` and `${file:...}` paths start (default: the current directory)."""
    return _load(text, name, base or Path(), environ).spec


def _read_text(path: Path, name: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None


def _load(text: str, name: str, base: Path, environ: Mapping[str, str] | None) -> Loaded:
    env = expansion_environment() if environ is None else environ
    secrets: set[str] = set()
    problems: list[str] = []
    main = _document(text, name, base, env, secrets, problems)
    included = _included(main, base, env, secrets, problems, {_identity(base, name)})
    data, origins, merging = merge(main, included)
    problems += merging
    if problems:
        raise ConfigError(problems)
    model = document_model()
    try:
        spec = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_pydantic_lines(exc, model, data, origins)) from None
    # request schemas named by file are read relative to the file of their endpoint
    endpoints, found = load_schemas(spec.endpoints, _base_of(origins, base))
    spec = spec.model_copy(update={"endpoints": endpoints})
    found += check_references(spec)
    if found:
        raise ConfigError([origins.line(where, why) for where, why in found])
    files = (name, *(document.name for document in included))
    return Loaded(spec, data, frozenset(secrets), files)


def _base_of(origins: Origins, base: Path) -> Callable[[int], Path]:
    """Where the relative paths of the endpoint at a merged index start: its file's dir."""

    def of(index: int) -> Path:
        name, _ = origins.place(f"endpoints[{index}]")
        return base if name == origins.main else Path(name).parent

    return of


def _document(
    text: str,
    name: str,
    base: Path,
    environ: Mapping[str, str],
    secrets: set[str],
    problems: list[str],
) -> Document:
    raw = _read_yaml(text, name)
    if not isinstance(raw, dict):
        raise ConfigError(
            [f"{name}: the file must be a mapping with `version`, `backends`, `endpoints`"]
        )
    expanded = expand(raw, environ, base)
    secrets |= expanded.secrets
    problems += [f"{name}: {where}: {why}" for where, why in expanded.problems]
    return Document(name, expanded.data)


def _included(
    document: Document,
    base: Path,
    environ: Mapping[str, str],
    secrets: set[str],
    problems: list[str],
    seen: set[Path],
) -> list[Document]:
    """The files `document` includes (and those they include), in order."""
    patterns = document.data.get("include", [])
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        problems.append(f"{document.name}: include: a list of file names or patterns")
        return []
    found: list[Document] = []
    for index, pattern in enumerate(patterns):
        absolute = Path(pattern).is_absolute()
        root, relative = (Path("/"), pattern.lstrip("/")) if absolute else (base, pattern)
        matches = sorted(root.glob(relative)) if relative else []
        if not matches:
            problems.append(f"{document.name}: include[{index}]: {pattern!r} matches no file")
        for path in matches:
            identity = path.resolve()
            if identity in seen:
                problems.append(f"{document.name}: include[{index}]: {path} is included twice")
                continue
            seen.add(identity)
            text = _read_text(path, str(path))
            child = _document(text, str(path), path.parent, environ, secrets, problems)
            found.append(child)
            found += _included(child, path.parent, environ, secrets, problems, seen)
    return found


def _identity(base: Path, name: str) -> Path:
    path = Path(name)
    return (path if path.is_absolute() or path.exists() else base / path.name).resolve()


def _read_yaml(text: str, name: str) -> Any:
    loader = _Loader(text)  # a SafeLoader: no arbitrary objects
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            raise ConfigError(
                [f"{name}: aliases expand the file past {MAX_EXPANDED_NODES:,} values"]
            )
        return loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        raise ConfigError([f"{where}: YAML syntax error: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{name}: YAML error: {exc}"]) from None
    except RecursionError:
        raise ConfigError([f"{name}: the YAML nests too deeply"]) from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values of `node` with aliases expanded; each node is measured once (linear time)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = 1  # a recursive alias counts once instead of looping
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(
            _expanded_size(key, sizes) + _expanded_size(value, sizes) for key, value in node.value
        )
    sizes[id(node)] = total
    return total


def _pydantic_lines(
    exc: ValidationError, model: type[BaseModel], raw: Any, origins: Origins
) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        message = _FRIENDLY.get(error["type"], error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            nearest = nearest_field(model, raw, error["loc"])
            if nearest is not None:
                message += f" (did you mean {nearest!r}?)"
        lines.append(origins.line(format_location(error["loc"]), message))
    return lines


def format_location(loc: tuple[int | str, ...]) -> str:
    """('endpoints', 2, 'calls', 0, 'backend') -> 'endpoints[2].calls[0].backend'.

    pydantic puts the discriminator value of a tagged union into the location
    (`backends.db.postgres.dsn`, `auth.users.jwt.issuer`), and the JSON type at each level
    of a call's `body`; the user never wrote them, so they are dropped.
    """
    names = {kind.name for kind in kinds()} | set(AUTH_KINDS)
    # a call's `body` is any JSON value: pydantic names the JSON type at each level of it
    # (`body.dict.a.list[1]`), one tag before every key or index the user wrote
    body = next((i for i in range(2, len(loc)) if loc[i] == "body" and loc[i - 2] == "calls"), None)
    parts: list[str] = []
    for index, item in enumerate(loc):
        if body is not None and index > body and (index - body) % 2 == 1:
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif index == 2 and loc[0] in _TAGGED and item in names:
            continue
        elif item in UNION_TAGS:
            continue  # which form of `shape:` pydantic validated
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def nearest_field(model: type[BaseModel], raw: Any, loc: tuple[int | str, ...]) -> str | None:
    """The valid field nearest to the unknown one at `loc` (a known synonym, or a close
    spelling), or None when nothing is close."""
    valid = _fields_at(model, raw, loc[:-1])
    unknown = str(loc[-1])
    if not valid:
        return None
    synonym = SYNONYMS.get(unknown.lower())
    if synonym in valid:
        return synonym
    close = difflib.get_close_matches(unknown, valid, n=1, cutoff=0.6)
    return close[0] if close else None


def _fields_at(model: type[BaseModel], raw: Any, loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model at `loc` accepts (as the file spells them: aliases)."""
    current: Any = model
    value = raw
    kind_names = {kind.name for kind in kinds()} | set(AUTH_KINDS)
    for position, item in enumerate(loc):
        if position == 2 and loc[0] in _TAGGED and item in kind_names:
            continue  # the discriminator tag pydantic adds
        if item in UNION_TAGS:
            continue
        current = _unwrap(current, value)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next(
                (f for n, f in current.model_fields.items() if (f.alias or n) == item), None
            )
            if field is None:
                return []
            current = field.annotation
        elif get_origin(current) in (dict, list):
            current = get_args(current)[-1]
        else:
            return []
        value = _child(value, item)
    current = _unwrap(current, value)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _child(value: Any, item: int | str) -> Any:
    """`value[item]` of the raw YAML when it is there, else None."""
    if isinstance(value, dict):
        return value.get(item)
    if isinstance(value, list) and isinstance(item, int) and 0 <= item < len(value):
        return value[item]
    return None


def _unwrap(annotation: Any, value: Any) -> Any:
    """Strip Annotated and Optional; pick the member of a tagged union that `value` names."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            members = [get_args(m)[0] if get_origin(m) is Annotated else m for m in members]
            listed = [m for m in members if get_origin(m) is list]
            if isinstance(value, list) and listed:
                annotation = listed[0]  # a mapping or a list of them (`shape:`)
                continue
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            tag = value.get("kind") if isinstance(value, dict) else None
            tagged = [m for m in models if tag is not None and _kind_of_model(m) == tag]
            annotation = (tagged or models or members)[0]
        else:
            return annotation


def _kind_of_model(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("kind")
    if field is None:
        return None
    values = get_args(field.annotation)
    return str(values[0]) if values else None
