"""Liveness, readiness and metrics: what orchestrators and Prometheus ask."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from ..schemas import Health

if TYPE_CHECKING:
    from ..app import ServerState

FEATURE = None
BODIES: dict = {}


def router(state: ServerState) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/livez", response_model=Health, response_model_exclude_none=True)
    async def livez() -> dict:
        """Liveness: the process answers (no model or database involved)."""
        return {"status": "alive"}

    @router.get(
        "/readyz",
        response_model=Health,
        responses={503: {"model": Health, "description": "Not ready"}},
    )
    async def readyz() -> Any:
        """Readiness: 200 once the model is loaded and warmed up; 503 before, and while draining."""
        cap = state.captioner
        body = {
            "status": "draining" if state.draining else state.status,
            "model": getattr(cap, "model_id", None) if cap is not None else None,
            "random_weights": getattr(cap, "random_weights", None) if cap is not None else None,
        }
        if state.load_error:
            body["detail"] = state.load_error
        return JSONResponse(body, status_code=200 if state.ready else 503)

    @router.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        payload, ctype = state.metrics.render()
        return Response(payload, media_type=ctype)

    return router
