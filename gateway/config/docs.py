"""The optional `docs:` block of an endpoint: what the OpenAPI document tells frontend teams
(`gateway openapi FILE`, `/openapi.json`, `/docs`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EndpointDocs(BaseModel):
    """Summary, description and an example answer of one endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    summary: str | None = Field(default=None, description="One line: the operation's title.")
    description: str | None = Field(default=None, description="Longer text (Markdown).")
    response_example: Any = Field(
        default=None, description="An example of the 200 answer's JSON body."
    )
