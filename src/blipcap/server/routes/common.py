"""What the routes share: the documented error answers and the caption request's steps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request
from pydantic import BaseModel

from ...options import CaptionOptions
from ...results import Caption
from ..inputs import load_inputs, parse_request
from ..schemas import ErrorResponse

if TYPE_CHECKING:
    from ..app import ServerState

ERROR_TEXTS = {
    400: "Malformed multipart body",
    401: "Missing or wrong API key (when keys are configured)",
    413: "Body, image or image count over the limits, or a decompression bomb",
    415: "Not an allow-listed image format, or an unsupported Content-Type",
    422: "Undecodable image, refused or failed URL, or invalid options",
    429: "Too many requests in flight from this client (see Retry-After)",
    503: "Queue full, decode memory busy, model not ready, or shutting down (see Retry-After)",
    504: "The request deadline passed",
}


def error_responses(**texts: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error answers, with ``texts`` ({"e413": ...}) replaced."""
    merged = {**ERROR_TEXTS, **{int(key[1:]): text for key, text in texts.items()}}
    return {code: {"model": ErrorResponse, "description": text} for code, text in merged.items()}


ERRORS = error_responses()
FEATURE_ERRORS = error_responses(
    e413="Body, image, page or image count over the limits",
    e415="Not an allow-listed format, or an unsupported Content-Type",
    e422="Undecodable input, refused URL, or invalid fields",
    e503="Busy, model not ready, or shutting down (see Retry-After)",
)


Plan = TypeVar("Plan")


async def caption_request(
    state: ServerState,
    request: Request,
    model: type[BaseModel],
    plan: Callable[[dict[str, Any]], tuple[CaptionOptions, Plan]],
) -> tuple[Plan, list[Caption]]:
    """Admit, parse (``model``), decode and caption one request's images, in input order.

    ``plan`` turns the request's fields into the caption options and what
    else the route needs, answered with the captions (a 422 raised there
    refuses the request before any image is decoded).
    """
    config = state.config
    client = state.client_of(request)
    with state.admit(client):
        deadline = time.monotonic() + config.request_timeout
        # From here until its images are queued, this request is on its way: a batch
        # may wait a little for it (see plan_batch).
        with state.batcher.expecting(1):
            parsed = await parse_request(request, config, model)
            options, planned = plan(parsed.fields)
            loaded = await load_inputs(parsed.inputs, config, deadline, state.model_sized)
        return planned, await state.caption_loaded(loaded, options, deadline, client)
