"""``POST /v1/captions``: the records of ``blipcap caption --format jsonl``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..inputs import caption_options
from ..schemas import CaptionsRequest, CaptionsResponse
from .common import ERRORS, caption_request

if TYPE_CHECKING:
    from ..app import ServerState

FEATURE = "captions"
BODIES = {"/v1/captions": CaptionsRequest}


def router(state: ServerState) -> APIRouter:
    router = APIRouter(tags=["captions"])

    @router.post("/v1/captions", response_model=CaptionsResponse, responses=ERRORS)
    async def captions(request: Request) -> JSONResponse:
        """Caption images: multipart ``files`` (one or more), or JSON ``images`` (url / base64).

        The records are those of ``blipcap caption --format jsonl``, in input
        order. If every image fails, the answer is the first failure's status
        (415 format, 413 size/bomb, 422 undecodable or refused URL); if some
        succeed, the failed ones are records with an ``error``.
        """
        _, results = await caption_request(
            state,
            request,
            CaptionsRequest,
            lambda fields: (caption_options(fields.get("options"), state.config), None),
        )
        return JSONResponse({"results": [r.to_record() for r in results]})

    return router
