"""What the status page shows, as plain data: the routes and their calls (a dependency
graph), each backend's hosts, breaker states and pool use, and the last minute of traffic.

Built once from the open app (`gateway/web/app.py` hands in plain callables), read live on
each refresh; nothing here is touched by a request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.observability.window import TrafficWindow


@dataclass(frozen=True, slots=True)
class CallNode:
    """One call of an endpoint in the graph."""

    name: str
    backend: str
    needs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteNode:
    """One endpoint: an aggregation of calls, or a passthrough to one backend."""

    method: str
    path: str
    calls: tuple[CallNode, ...]
    proxy: str | None = None

    def depths(self) -> dict[str, int]:
        """Each call's column in the graph: 1 without `needs`, else one past its deepest."""
        by_name = {c.name: c for c in self.calls}
        depth: dict[str, int] = {}

        def of(name: str, seen: frozenset[str] = frozenset()) -> int:
            if name not in depth:
                call = by_name[name]
                needs = [n for n in call.needs if n in by_name and n not in seen]
                depth[name] = 1 + max((of(n, seen | {name}) for n in needs), default=0)
            return depth[name]

        for call in self.calls:
            of(call.name)
        return depth


@dataclass(frozen=True, slots=True)
class BackendView:
    """What the page reads of one open backend, at refresh time."""

    name: str
    kind: str
    hosts: tuple[str, ...]
    breakers: Callable[[], Mapping[str, str]]
    """Breaker state by host (empty without a `breaker:`)."""
    usage: Callable[[], Mapping[str, int | float]] | None = None


@dataclass(frozen=True, slots=True)
class StatusData:
    """Everything on the page; `snapshot()` reads the live parts."""

    routes: tuple[RouteNode, ...]
    backends: tuple[BackendView, ...]
    window: TrafficWindow
    state: Callable[[], str]
    """The process's lifecycle state (starting, ready, draining)."""

    def snapshot(self) -> dict[str, Any]:
        traffic = self.window.summary()
        return {
            "state": self.state(),
            "backends": [
                {
                    "name": b.name,
                    "kind": b.kind,
                    "hosts": [
                        {"host": host, "breaker": b.breakers().get(host)} for host in b.hosts
                    ],
                    "usage": dict(b.usage()) if b.usage is not None else {},
                }
                for b in self.backends
            ],
            "endpoints": traffic["endpoints"],
            "calls": traffic["calls"],
            "failures": list(reversed(self.window.failures)),
        }


def routes_of(endpoints: Sequence[Any]) -> tuple[RouteNode, ...]:
    """The graph of validated endpoints (`EndpointSpec`s)."""
    return tuple(
        RouteNode(
            method=e.method,
            path=e.path,
            calls=tuple(CallNode(c.name or "", c.backend, tuple(c.needs)) for c in e.calls),
            proxy=e.proxy.backend if e.proxy is not None else None,
        )
        for e in endpoints
    )
