"""Every route's dependencies run on the event loop, none in FastAPI's thread pool."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from service.routes import chat, health, runs


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for dependency in dependant.dependencies:
        yield dependency
        yield from _dependencies(dependency)


def test_no_dependency_of_any_route_runs_in_the_thread_pool() -> None:
    # A plain `def` dependency costs a thread hop per request; blocking work belongs in an
    # explicit `in_thread` call, where the store's busy bound applies. (The routers
    # create_app includes: FastAPI keeps included routers apart from `app.routes`.)
    routes = [route for module in (chat, health, runs) for route in module.router.routes
              if isinstance(route, APIRoute)]
    sync = sorted({
        f"{route.path}: {dependency.call.__module__}.{dependency.call.__qualname__}"
        for route in routes for dependency in _dependencies(route.dependant)
        if dependency.call is not None and not inspect.iscoroutinefunction(dependency.call)
    })

    assert len(routes) >= 4
    assert sync == []
