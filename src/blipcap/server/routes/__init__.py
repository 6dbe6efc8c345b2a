"""The service's routes: one router per feature.

Each module builds its router for one :class:`~blipcap.server.app.ServerState`
with ``router(state)``, which answers None where the feature is not offered
(documents without an OCR engine, search without ``--db``). ``FEATURE`` is
its name in ``GET /v1/info`` (None for the service's own routes) and
``BODIES`` its request models by path, from which the OpenAPI document
derives both the JSON and the multipart body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import alttext, captions, documents, health, info, page, search, social

if TYPE_CHECKING:
    from fastapi import FastAPI
    from pydantic import BaseModel

    from ..app import ServerState

MODULES = (page, health, info, captions, social, alttext, documents, search)


@dataclass
class Installed:
    bodies: dict[str, type[BaseModel]] = field(default_factory=dict)
    """Request models by path, for the OpenAPI document."""
    paths: set[str] = field(default_factory=set)
    """Every route's path (metrics label requests by these, anything else is "other")."""


def install_routes(app: FastAPI, state: ServerState) -> Installed:
    """Include the router of every feature offered here (their names go to ``state.features``)."""
    installed = Installed()
    names: list[str] = []
    for module in MODULES:
        router = module.router(state)
        if router is None:
            continue
        app.include_router(router)
        if module.FEATURE:
            names.append(module.FEATURE)
        installed.bodies.update(module.BODIES)
        installed.paths.update(_path(route) for route in router.routes)
    installed.paths.update(_path(route) for route in app.routes)
    installed.paths.discard("")
    state.features = names
    return installed


def _path(route: Any) -> str:
    return getattr(route, "path", "")
