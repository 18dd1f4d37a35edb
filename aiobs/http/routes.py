"""The route template of a request, read from what Starlette's and FastAPI's routers recorded in
the scope while they routed it: no second routing pass.

- a route that matched (``scope["route"]``), with the template FastAPI resolved for a route
  included through routers with prefixes (its effective route context);
- a route FastAPI's router matched without recording it (``app.add_route``, a ``Host``),
  found by its endpoint among the application's routes;
- a mounted application that is not a router (``StaticFiles``, another framework's app): the
  mount path and ``/{path}``; a mounted router that matched nothing: ``unmatched``.

The path of the mounts a request went through is what the routers added to ``root_path``;
the root path the request arrived with (a proxy's prefix) is not part of any template.
"""

from __future__ import annotations

import weakref
from collections.abc import MutableMapping
from typing import Any

from aiobs import catalog

Scope = MutableMapping[str, Any]
MOUNTED_APP_SUFFIX = "/{path}"

_by_endpoint: weakref.WeakKeyDictionary[Any, tuple[int, dict[int, str]]] = (
    weakref.WeakKeyDictionary()
)


def route_template(scope: Scope, root_path: str = "") -> str:
    """The template of the route that served the request, or ``unmatched``. Call it after the
    application ran; ``root_path`` is the scope's root path when the request arrived."""
    prefix: str = scope.get("root_path", "")[len(root_path) :]
    route = scope.get("route")
    if route is not None and not hasattr(route, "routes"):  # a route, not a mount or host
        effective = scope.get("fastapi", {}).get("effective_route_context")
        if effective is not None and getattr(effective, "original_route", None) is route:
            route = effective
        template = getattr(route, "path_format", None)
        if isinstance(template, str):
            return prefix + template
    endpoint = scope.get("endpoint")
    if endpoint is None:
        return catalog.UNMATCHED_ROUTE
    if route is None:
        template = _template_of_endpoint(scope.get("app"), endpoint)
        if template is not None:
            return prefix + template
    if getattr(endpoint, "routes", None):  # a mounted router that matched nothing
        return catalog.UNMATCHED_ROUTE
    if prefix or (route is not None and hasattr(route, "routes")):
        return prefix + MOUNTED_APP_SUFFIX
    return catalog.UNMATCHED_ROUTE


def _template_of_endpoint(app: Any, endpoint: Any) -> str | None:
    """The template of the application's own route (or host) whose endpoint is ``endpoint``:
    FastAPI's router records no route for Starlette routes and hosts."""
    routes = getattr(app, "routes", None)
    if not routes:
        return None
    try:
        size, templates = _by_endpoint.get(app, (-1, {}))
    except TypeError:  # an app that cannot be weakly referenced
        return None
    if size != len(routes):
        templates = {}
        for candidate in routes:
            if hasattr(candidate, "host_format"):
                templates.setdefault(id(candidate.app), MOUNTED_APP_SUFFIX)
            elif isinstance(getattr(candidate, "path_format", None), str) and hasattr(
                candidate, "endpoint"
            ):
                templates.setdefault(id(candidate.endpoint), candidate.path_format)
        _by_endpoint[app] = (len(routes), templates)
    return templates.get(id(endpoint))
