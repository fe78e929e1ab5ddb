"""The app's router: Starlette's, plus a short way to an endpoint's route.

An endpoint route (`EndpointRoute`, gateway/web/steps.py) is an ASGI app that answers every
outcome itself, problems included: nothing between the edge (gateway/web/edge.py) and it has
anything to do for its requests. So the edge asks `GatewayRouter.lane` first: when the route
Starlette's router would pick for the request is an endpoint route, the edge calls that
route's app itself, with the scope as the router would have set it, and the request skips
the exception middleware (its wrapper, a `send` wrapper per message) and the router's frames.
Any other outcome (an operations route, a 404, a 405, a slash redirect) goes the whole way,
through the router as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.types import ASGIApp, Scope


class EndpointRoute(Route):
    """A route whose app answers its own errors (steps.py's `_Endpoint`, counted by its
    generation): one the edge may call directly."""


_Entry = tuple[Callable[[str], re.Match[str] | None] | None, BaseRoute, EndpointRoute | None]
"""(the route's path regex match, when a failed match means no match at all; the route;
the route again when it is an endpoint route)."""


def _entry(route: BaseRoute) -> _Entry:
    kind = type(route)
    # these match nothing their regex does not (Starlette's Route.matches, Mount.matches)
    prefilter = route.path_regex.match if kind in (EndpointRoute, Route, Mount) else None  # type: ignore[attr-defined]
    return prefilter, route, route if kind is EndpointRoute else None  # type: ignore[return-value]


class GatewayRouter(Router):
    """Starlette's router, plus `lane`."""

    _seen: list[BaseRoute] | None = None
    _entries: tuple[_Entry, ...] = ()

    def lane(self, scope: Scope) -> ASGIApp | None:
        """The app of the endpoint route that the router would choose for this HTTP request,
        with the scope updated as the router does (`router`, `route`, `endpoint`,
        `path_params`); None when the router would choose anything else (or nothing).

        The router's choice is the first route that matches fully (path and method). A
        route's path is tried with its regex before anything else: `Route.matches` builds
        the route path and a child scope for each route it is asked about (~2 us a route,
        and the operations routes come first)."""
        routes = self.routes
        if self._seen != routes:  # element by element, by identity first: ~0.1 us
            self._seen = list(routes)
            self._entries = tuple(_entry(route) for route in routes)
        path = get_route_path(scope)
        for prefilter, route, endpoint in self._entries:
            if prefilter is not None:
                found = prefilter(path)
                if found is None:
                    continue
                if endpoint is not None:
                    if endpoint.methods and scope["method"] not in endpoint.methods:
                        continue  # a partial match: a later route may match fully
                    return self._chosen(scope, endpoint, found)
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return None  # not an endpoint route: the router's to serve
        return None

    def _chosen(self, scope: Scope, route: EndpointRoute, found: re.Match[str]) -> ASGIApp:
        """`route`'s app, with the scope `Route.matches` and the router would make."""
        convertors = route.param_convertors
        params: dict[str, Any] = dict(scope.get("path_params", {}))
        for key, value in found.groupdict().items():
            params[key] = convertors[key].convert(value)
        if "router" not in scope:
            scope["router"] = self
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = params
        app: ASGIApp = route.app
        return app
