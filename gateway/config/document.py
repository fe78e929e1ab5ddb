"""The whole config file: its version, backends of every registered kind, and endpoints.

`GatewaySpec` is the type the rest of the gateway reads; `document_model()` is the same model
with `backends` validated as a tagged union of the registered kinds' models (`kind:` picks
the model), so a kind added to the registry is valid in a routes file with no edit here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Field, create_model

from gateway.backends.registry import kinds
from gateway.config.edge import AuthSpec, ClusterSpec, CorsSpec, RateLimitSpec
from gateway.config.models import BackendSpec, EndpointSpec, Model


class GatewaySpec(Model):
    """The whole config file."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"title": "fanout gateway config"},
    )

    version: Literal[1]
    backends: dict[str, BackendSpec] = Field(default_factory=dict)
    endpoints: list[EndpointSpec] = Field(default_factory=list)
    include: list[str] = Field(
        default_factory=list,
        description="Other files (paths or glob patterns, relative to this one) merged in "
        "order: their backends and endpoints join this file's.",
    )
    auth: dict[str, AuthSpec] = Field(
        default_factory=dict, description="Named authenticators endpoints `use`."
    )
    cors: CorsSpec | None = Field(default=None, description="CORS of every endpoint.")
    rate_limits: dict[str, RateLimitSpec] = Field(
        default_factory=dict, description="Named limits endpoints list in `rate_limit`."
    )
    cluster: ClusterSpec = Field(
        default_factory=ClusterSpec, description="What every process and replica shares."
    )


def document_model() -> type[GatewaySpec]:
    """`GatewaySpec` whose backends validate as the kinds registered now."""
    return _model_for(tuple(kind.spec for kind in kinds()))


@lru_cache(maxsize=8)
def _model_for(models: tuple[type[BackendSpec], ...]) -> type[GatewaySpec]:
    # a union built at run time: typing's subscription, which mypy cannot follow
    backend: Any = Annotated[Union.__getitem__(models), Field(discriminator="kind")]
    return create_model(
        "GatewaySpec",
        __base__=GatewaySpec,
        __doc__=GatewaySpec.__doc__,
        backends=(dict[str, backend], Field(default_factory=dict)),
    )
