"""``GET /v1/info``: the model, the features offered, the limits and the platforms' rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Request

from ... import social
from ...version import __version__
from ..schemas import Info, PlatformInfo
from .common import ERRORS

if TYPE_CHECKING:
    from ..app import ServerState

FEATURE = None
BODIES: dict = {}
LIMITS = (
    "max_body_bytes",
    "max_images_per_request",
    "max_batch_size",
    "max_queue",
    "request_timeout",
    "max_new_tokens",
    "max_beams",
    "max_captions",
)
PLATFORM_RULES = tuple(PlatformInfo.model_fields)


def router(state: ServerState) -> APIRouter:
    router = APIRouter(tags=["info"])

    @router.get("/v1/info", response_model=Info, responses={401: ERRORS[401]})
    async def info(request: Request) -> dict:
        """The model, the features this server offers, its limits and the platforms' rules."""
        state.client_of(request)
        cap = state.captioner
        return {
            "version": __version__,
            "status": "draining" if state.draining else state.status,
            "model": getattr(cap, "model_id", None),
            "backend": getattr(getattr(cap, "backend", None), "name", None),
            "device": getattr(cap, "device", None),
            "dtype": getattr(cap, "dtype", None),
            "random_weights": getattr(cap, "random_weights", None),
            "features": list(state.features),
            "auth": state.api_keys.enabled,
            "limits": {name: getattr(state.config, name) for name in LIMITS},
            "platforms": {
                key: {name: getattr(p, name) for name in PLATFORM_RULES}
                for key, p in social.PLATFORMS.items()
            },
        }

    return router
