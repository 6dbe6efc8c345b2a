"""``GET /v1/search`` and its thumbnails, over the index given with ``--db``."""

from __future__ import annotations

import hashlib
import io
import time
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ...errors import BlipcapError, DecodeCancelledError, InputError
from ...images import CancelToken
from ..inputs import RequestError, decode_token
from ..schemas import ErrorResponse
from .common import FEATURE_ERRORS

if TYPE_CHECKING:
    from ..app import ServerState

FEATURE = "search"
BODIES: dict = {}


def router(state: ServerState) -> APIRouter | None:
    db = state.config.db
    if not db:
        return None
    router = APIRouter(tags=["search"])

    def open_index():
        from ...index import open_store

        try:
            return open_store(db, create=False)
        except BlipcapError as exc:
            raise RequestError(503, f"the search index cannot be opened: {exc}") from None

    def check_index() -> None:
        with open_index():
            pass

    state.startup_checks.append(check_index)

    def run_search(query: str, limit: int, mode: str) -> list[dict]:
        with open_index() as store:
            hits = store.search(query, limit=limit, mode=mode)
        out = []
        for hit in hits:
            record = hit.to_dict()
            record["thumbnail"] = f"/v1/thumbnails/{hit.sha256}"
            out.append(record)
        return out

    @router.get("/v1/search", responses=FEATURE_ERRORS)
    async def search(
        request: Request,
        q: Annotated[str, Query(min_length=1, max_length=500, description="What to look for")],
        limit: Annotated[int, Query(ge=1, le=50)] = 10,
        mode: Literal["hybrid", "text", "semantic"] = "hybrid",
    ) -> JSONResponse:
        """Search the index by captions, text in the images and descriptions."""
        state.client_of(request)
        results = await run_in_threadpool(run_search, q, limit, mode)
        return JSONResponse({"results": results})

    def thumbnail_bytes(sha256: str, cancel: CancelToken) -> bytes | None:
        with open_index() as store:
            record = store.get_image(sha256)
        if record is None:
            return None
        if record.get("thumbnail"):
            return record["thumbnail"]
        return _thumbnail(record.get("paths", []), state, cancel)

    @router.get(
        "/v1/thumbnails/{sha256}",
        response_class=Response,
        responses={
            200: {"content": {"image/jpeg": {}}},
            404: {"model": ErrorResponse, "description": "No indexed image has this hash"},
            **{code: FEATURE_ERRORS[code] for code in (401, 422, 503, 504)},
        },
    )
    async def thumbnail(
        request: Request, sha256: Annotated[str, PathParam(pattern=r"^[0-9a-f]{64}$")]
    ) -> Response:
        """A JPEG thumbnail of an indexed image (only images in the index, by content hash)."""
        state.client_of(request)
        with decode_token(time.monotonic() + state.config.request_timeout) as cancel:
            data = await run_in_threadpool(thumbnail_bytes, sha256, cancel)
        if data is None:
            return JSONResponse({"detail": "no indexed image has this hash"}, status_code=404)
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        return Response(
            data,
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=3600", "ETag": etag},
        )

    return router


def _thumbnail(paths: list[str], state: ServerState, cancel: CancelToken) -> bytes | None:
    """A 256-pixel JPEG of the first of ``paths`` that still decodes, or None."""
    from ...images import load_image

    for path in paths:
        try:
            image = load_image(path, state.config.image_limits, cancel=cancel)
        except DecodeCancelledError:
            raise  # the request is over (or the decode budget busy): not another path
        except InputError:
            continue
        image.thumbnail((256, 256))
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=85)
        return buf.getvalue()
    return None
