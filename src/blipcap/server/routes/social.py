"""``POST /v1/social``: alt text and post text per platform (see :mod:`blipcap.social`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ... import social
from ...errors import BlipcapError
from ...options import CaptionOptions
from ..config import ServerConfig
from ..inputs import RequestError, caption_options
from ..schemas import SocialRequest, SocialResponse
from .common import ERRORS, caption_request

if TYPE_CHECKING:
    from ..app import ServerState

FEATURE = "social"
BODIES = {"/v1/social": SocialRequest}


def router(state: ServerState) -> APIRouter:
    router = APIRouter(tags=["social"])

    @router.post("/v1/social", response_model=SocialResponse, responses=ERRORS)
    async def social_posts(request: Request) -> JSONResponse:
        """Alt text and post text per platform, fitted to its limits and counted its way.

        One record per image and platform (image-major). ``variants`` > 1
        samples that many captions and ranks them; ``variants[0]`` is the best.
        """
        (opts, platforms), results = await caption_request(
            state, request, SocialRequest, lambda fields: social_plan(fields, state.config)
        )
        random_weights = bool(getattr(state.captioner, "random_weights", False))
        records = [
            social.compose(r, p, opts, random_weights=random_weights).to_record()
            for r in results
            for p in platforms
        ]
        return JSONResponse({"results": records})

    return router


def social_plan(
    fields: dict[str, Any], config: ServerConfig
) -> tuple[CaptionOptions, tuple[social.SocialOptions, list[str]]]:
    """The caption options, social options and platforms of a validated :class:`SocialRequest`."""
    most = min(10, config.max_captions)
    if fields["variants"] > most:
        raise RequestError(422, f"'variants' must be between 1 and {most} on this server")
    attribution = fields["attribution"]
    if isinstance(attribution, str):
        text = attribution.strip() or None
    else:
        text = social.DEFAULT_ATTRIBUTION if attribution else None
    options = social.SocialOptions(
        variants=fields["variants"],
        hashtags=fields["hashtags"],
        max_hashtags=fields["max_hashtags"],
        attribution=text,
    )
    base = caption_options(fields.get("options"), config)
    try:
        cap_opts = options.caption_options(base)
    except BlipcapError as exc:
        raise RequestError(422, f"invalid options: {exc}") from None
    return cap_opts, (options, list(dict.fromkeys(fields["platforms"])))
