"""An endpoint's `request:` block: the client's JSON body, and the JSON Schema it must match.

```yaml
request:
  schema: schemas/order.json      # a file, relative to the routes file; or the schema inline
```

A schema file is read once, when the routes file is loaded (`load_schemas`), and checked then
(it parses, it is a valid JSON Schema, its `$ref`s stay inside it), so `gateway check` names a
bad one and serving never touches the file. Drafts 4 to 2020-12 are understood (`$schema`
picks one; without it, 2020-12). A `$ref` to another document is refused rather than fetched:
the gateway never reaches out to the network because of its config.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, Field

MAX_SCHEMA_BYTES = 1024 * 1024
"""A schema file larger than this is refused unread: no endpoint needs one anywhere near."""


class RequestSpec(BaseModel):
    """The client's body: read once (within `max_body`), parsed as JSON, optionally validated."""

    # gateway.config.models.Model's config: that module imports this one, so not its base
    model_config = ConfigDict(extra="forbid", frozen=True)

    json_schema: str | dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        description="A JSON Schema the body must match: a file path (relative to the routes "
        "file) or the schema inline. A body that fails it gets 400 naming each failing place.",
    )


def load_schema(value: str | dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """The schema itself: `value` when inline, else the JSON file it names (relative to
    `base_dir`); ValueError saying why it is unusable."""
    if isinstance(value, str):
        path = base_dir / value
        try:
            with path.open("rb") as file:
                data = file.read(MAX_SCHEMA_BYTES + 1)
        except OSError as exc:
            raise ValueError(f"cannot read {value!r}: {exc.strerror or exc}") from None
        if len(data) > MAX_SCHEMA_BYTES:
            raise ValueError(f"{value!r} is larger than {MAX_SCHEMA_BYTES} bytes")
        try:
            loaded = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{value!r} is not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{value!r} must hold a JSON object (a schema)")
        schema: dict[str, Any] = loaded
    else:
        schema = value
    check_schema(schema)
    return schema


def check_schema(schema: dict[str, Any]) -> None:
    """ValueError when `schema` is not a valid JSON Schema, or refers outside itself."""
    validator = validator_for(schema, default=Draft202012Validator)
    try:
        validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise ValueError(
            f"not a valid JSON Schema: {exc.message}" + (f" (at {where})" if where else "")
        ) from None
    for ref in _refs(schema):
        if not ref.startswith("#"):
            raise ValueError(
                f"$ref {ref!r} leaves the schema: only refs within it (#/...) are resolved"
            )


def compile_schema(schema: dict[str, Any]) -> Validator:
    """A validator for a checked schema (built once per endpoint, at start-up)."""
    validator: Validator = validator_for(schema, default=Draft202012Validator)(schema)
    return validator


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)
