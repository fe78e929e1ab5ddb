"""A backend kind that exists only in the tests: it proves a kind is one module and one
registry line (here an entry point), with no edit anywhere else in the gateway.

`kind: echo` answers every call with its greeting and the call's rendered `args`; an
argument `crash: "yes"` makes the call raise a plain exception (a bug, not a failed call),
which the gateway must answer with a 500 that names the request id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from gateway.backends.legacy import check_args, text_arguments
from gateway.backends.live import LiveBackend, OpenContext
from gateway.config.models import BackendSpec, CallSpec, Problem
from gateway.config.refs import RefScope
from gateway.engine.plan import CallTraits
from gateway.types import BackendRequest, BackendResponse, Call


class EchoBackend(BackendSpec):
    """The test kind's config: what it says back."""

    kind: Literal["echo"]
    greeting: str = "hello"


class EchoKind:
    name = "echo"
    spec = EchoBackend
    passthrough = False
    call_fields = frozenset({"args"})

    def check(self, name: str, spec: EchoBackend) -> list[Problem]:
        if not spec.greeting:
            return [(f"backends.{name}.greeting", "an echo backend needs something to say")]
        return []

    def check_call(
        self, spec: EchoBackend, call: CallSpec, where: str, scope: RefScope
    ) -> list[Problem]:
        return check_args(call, where, scope)

    def traits(self, spec: EchoBackend, call: CallSpec) -> CallTraits:
        return CallTraits(method="echo", arguments=text_arguments(call))

    async def open(
        self, specs: Mapping[str, EchoBackend], context: OpenContext
    ) -> dict[str, LiveBackend]:
        live: dict[str, LiveBackend] = {}
        for name, spec in specs.items():
            call = echo(spec)
            live[name] = LiveBackend(name=name, kind=self.name, call=call, hosts=((name, call),))
        return live


def echo(spec: EchoBackend) -> Call:
    async def call(request: BackendRequest) -> BackendResponse:
        if request.args.get("crash") == "yes":
            raise RuntimeError("the echo kind was told to crash")
        return BackendResponse(200, {"greeting": spec.greeting, "args": dict(request.args)})

    return call


KIND = EchoKind()
