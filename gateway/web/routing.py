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

from starlette._utils import get_route_path
from starlette.routing import Match, Route, Router
from starlette.types import ASGIApp, Scope


class EndpointRoute(Route):
    """A route whose app answers its own errors (steps.py's `_Endpoint`, counted by its
    generation): one the edge may call directly."""


class GatewayRouter(Router):
    """Starlette's router, plus `lane`."""

    def lane(self, scope: Scope) -> ASGIApp | None:
        """The app of the endpoint route that the router would choose for this HTTP request,
        with the scope updated as the router does (`router`, `route`, `endpoint`,
        `path_params`); None when the router would choose anything else (or nothing).

        The router's choice is the first route that matches fully (path and method). A
        route's path is tried with its regex before asking the route itself (a plain
        `Route` matches only when its regex does): `Route.matches` builds the route path
        and a child scope for each route it is asked about (~2 us a route)."""
        path = get_route_path(scope)
        for route in self.routes:
            kind = type(route)
            if (kind is EndpointRoute or kind is Route) and route.path_regex.match(path) is None:  # type: ignore[attr-defined]
                continue
            match, child = route.matches(scope)
            if match is not Match.FULL:
                continue
            if kind is not EndpointRoute:
                return None
            if "router" not in scope:
                scope["router"] = self
            scope["route"] = route
            scope.update(child)
            app: ASGIApp = route.app  # type: ignore[attr-defined]
            return app
        return None
