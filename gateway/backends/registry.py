"""The backend kind registry: every kind (`kind: http`, `postgres`, ...) is one module that
declares a `BackendKind`, and one line in `BUILT_IN` (or an entry point) registers it.

A kind declares its config model, its checks (of the backend, and of each call to it), what
it says about each call (`CallTraits`: how the method reads, how `args` render, whether the
call may be repeated) and how it opens at start-up: its resources enter the app's exit stack
(so they close at shutdown), it registers its own metrics and readiness checks, and it gives
back one `LiveBackend` per configured backend. Nothing outside this package asks which kind
a backend is.

Kinds from other packages register through the `fanout.backend_kinds` entry point group
(the value names a `BackendKind` object, `package.module:KIND`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import AsyncExitStack
from importlib.metadata import entry_points
from typing import Any, Protocol

from gateway.backends import compute, http, legacy, postgres
from gateway.backends.live import LiveBackend, OpenContext
from gateway.config.models import BackendSpec, CallSpec, Problem
from gateway.config.refs import RefScope
from gateway.engine.plan import CallTraits

log = logging.getLogger("gateway.backends")


class BackendKind(Protocol):
    """What one kind of backend declares (see the module docstring)."""

    @property
    def name(self) -> str:
        """The `kind:` value in the config file."""
        ...

    @property
    def spec(self) -> type[BackendSpec]:
        """The config model of a backend of this kind (its `kind` field a Literal of `name`)."""
        ...

    @property
    def passthrough(self) -> bool:
        """Whether `proxy:` endpoints may use a backend of this kind."""
        ...

    @property
    def call_fields(self) -> frozenset[str]:
        """Which of the kind-specific call fields (`KIND_FIELDS`) its calls may set."""
        ...

    def check(self, name: str, spec: Any) -> list[Problem]:
        """Problems of the backend itself, located from `backends.<name>`."""
        ...

    def check_call(self, spec: Any, call: CallSpec, where: str, scope: RefScope) -> list[Problem]:
        """Problems of one call to a backend of this kind (its fields, its templates)."""
        ...

    def traits(self, spec: Any, call: CallSpec) -> CallTraits:
        """What the engine needs to know of one (checked) call to a backend of this kind."""
        ...

    def open(
        self, specs: Mapping[str, Any], context: OpenContext
    ) -> Awaitable[dict[str, LiveBackend]]:
        """Open every backend of this kind (they may share resources, as HTTP's session)."""
        ...


KIND_FIELDS = (
    "path",
    "query",
    "headers",
    "method",
    "args",
    "sql",
    "params",
    "result",
    "body",
    "pass_errors",
)
"""Call fields whose meaning belongs to a kind; a call may set only those its kind takes."""

BUILT_IN: tuple[BackendKind, ...] = (postgres.KIND, http.KIND, legacy.KIND, compute.KIND)
"""The kinds every gateway has. Backends open in this order and close in reverse, so the
databases close last."""

_kinds: dict[str, BackendKind] = {}


def register(kind: BackendKind) -> None:
    """Add a kind (or replace one of the same name); config files may then use it."""
    _kinds[kind.name] = kind


def kinds() -> Sequence[BackendKind]:
    """Every registered kind, in opening order."""
    if not _kinds:
        for kind in BUILT_IN:
            register(kind)
        for entry in entry_points(group="fanout.backend_kinds"):
            register(entry.load())
    return tuple(_kinds.values())


def kind_of(spec: BackendSpec) -> BackendKind:
    """The kind of a validated backend config."""
    for kind in kinds():
        if type(spec) is kind.spec:
            return kind
    raise LookupError(f"no registered kind has the model {type(spec).__name__}")


def traits_of(spec: BackendSpec, call: CallSpec) -> CallTraits:
    """`CallTraits` of a call to `spec`, from the backend's kind (for `plan_endpoint`)."""
    return kind_of(spec).traits(spec, call)


async def open_backend(name: str, spec: BackendSpec, context: OpenContext) -> LiveBackend:
    """Open one backend; `context.stack` is its own (closing it closes the backend)."""
    return (await kind_of(spec).open({name: spec}, context))[name]


def opening_order(specs: Mapping[str, BackendSpec]) -> list[str]:
    """Backend names kind by kind in registry order (they close in reverse: databases last)."""
    order = [kind.spec for kind in kinds()]
    return sorted(specs, key=lambda name: order.index(type(specs[name])))


async def open_backends(
    specs: Mapping[str, BackendSpec], context: OpenContext
) -> dict[str, LiveBackend]:
    """Open every backend, each on a stack of its own inside `context.stack`."""
    live: dict[str, LiveBackend] = {}
    for name in opening_order(specs):
        own = await context.stack.enter_async_context(AsyncExitStack())
        one = OpenContext(own, context.settings, context.registry, context.shared, context.stack)
        live[name] = await open_backend(name, specs[name], one)
    return {name: live[name] for name in specs}
