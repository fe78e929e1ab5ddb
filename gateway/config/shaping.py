"""The config contract of collections: `shape:` (array shaping) and `join:` (attaching the
elements of one call's list to another's by key).

Paths here are dotted, with list indexes and `*` (`items.*.price`, `schools.0`); their
rules (well-formed, where `*` may stand) are checked in `gateway.config.collections`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag


class Model(BaseModel):
    """As `gateway.config.models.Model` (which imports this module, so it cannot be
    imported here): unknown fields are errors, values are frozen after load."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SortSpec(Model):
    """Sort a list by a field of its elements."""

    path: str = Field(default="", description="The list; empty: the value itself.")
    by: str | None = Field(
        default=None, description="A (dotted) field of each element; none: the elements."
    )
    order: Literal["asc", "desc"] = "asc"


class LimitSpec(Model):
    """Keep the first `n` elements of a list."""

    path: str = Field(default="", description="The list; empty: the value itself.")
    n: int = Field(ge=0)


class ShapeSpec(Model):
    """Array shaping; the operations run in this order: move, del, append, flatten, sort,
    limit (give a list of these mappings for another order)."""

    move: dict[str, str] = Field(
        default_factory=dict,
        description="from.path: to.path, in the order written; with `*`, both sides share "
        "everything up to their last `*`.",
    )
    delete: list[str] = Field(
        default_factory=list, alias="del", description="Paths to delete (`list.0`: an element)."
    )
    append: dict[str, list[str]] = Field(
        default_factory=dict,
        description="target.list: [source.list, ...]: the target becomes the sources "
        "concatenated in order; sources other than the target are removed.",
    )
    flatten: str | list[str] | None = Field(
        default=None, description="Lists whose list elements are replaced by their elements."
    )
    sort: SortSpec | None = None
    limit: LimitSpec | None = None


UNION_TAGS = ("shape-mapping", "shape-list")
"""How pydantic names the two forms of `shape:` in error locations; the loader drops them
(the user never wrote them)."""


def _form(value: Any) -> str:
    return UNION_TAGS[1] if isinstance(value, list) else UNION_TAGS[0]


Shape = Annotated[
    Annotated[ShapeSpec, Tag(UNION_TAGS[0])] | Annotated[list[ShapeSpec], Tag(UNION_TAGS[1])],
    Discriminator(_form),
]
"""A `shape:` value: one mapping, or several run in order. Validated as the form it has,
so a mistake is reported once, not once per form."""


class JoinSpec(Model):
    """Attach each element of this call's list to the element of another call's list whose
    field `on` equals the element's field `key`."""

    into: str = Field(description="The call whose list receives (`products`, `page.items`).")
    on: str = Field(description="The field of the receiving elements to match on.")
    key: str = Field(description="The field of this call's elements that must equal `on`.")
    attach_as: str = Field(alias="as", description="The key the match is attached under.")
    many: bool = Field(
        default=False,
        description="Attach the list of every match (empty when none) instead of the first.",
    )
