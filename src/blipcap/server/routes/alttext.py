"""``POST /v1/alt-text``: alt text for images, or the alt-text check of an HTML fragment.

A fragment goes through the same engine as ``blipcap alt-text``
(:func:`blipcap.alttext.engine.run_alt_text`), with two server rules: images
are read only from ``data:`` URIs and http(s) URLs (through the SSRF-safe
fetcher, under the request's limits) - a fragment's relative or ``file:``
paths would point into the server's own disk, so they are reported, never
read - and the captions go through the shared micro-batcher.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...errors import InputError
from ...options import resolve_options
from ...text import to_alt_text
from ..batcher import DeadlineError
from ..inputs import RequestError, decode_token, fetch, load_inputs, parse_request
from ..schemas import AltTextRequest
from .common import FEATURE_ERRORS

if TYPE_CHECKING:
    from ...alttext.engine import Run
    from ...alttext.sources import Resolved
    from ..app import ServerState

FEATURE = "alt-text"
BODIES = {"/v1/alt-text": AltTextRequest}
FRAGMENT = "fragment.html"


def router(state: ServerState) -> APIRouter:
    router = APIRouter(tags=["alt text"])
    config = state.config

    @router.post("/v1/alt-text", responses=FEATURE_ERRORS)
    async def alt_text(request: Request) -> JSONResponse:
        """Alt text for images, or a check of an HTML fragment's text alternatives.

        JSON ``{"html": "..."}``: every image-like element is judged (W3C alt
        decision tree); images the model must see are read from ``data:`` URIs
        or http(s) URLs only. The answer lists the findings and the fragment
        with the proposed alt text written in. Images (multipart ``files`` or
        JSON ``images``): one alt text per image.
        """
        client = state.client_of(request)
        with state.admit(client):
            deadline = time.monotonic() + config.request_timeout
            parsed = await parse_request(request, config, AltTextRequest)
            max_chars = parsed.fields["max_chars"]
            if parsed.fields.get("html") is not None:
                if parsed.inputs:
                    raise RequestError(422, "send either 'html' or 'images', not both")
                body = await check_html(state, parsed.fields["html"], max_chars, deadline, client)
                return JSONResponse(body)
            if not parsed.inputs:
                raise RequestError(422, "send 'html' (a fragment) or 'images'")
            with state.batcher.expecting(len(parsed.inputs)):
                loaded = await load_inputs(parsed.inputs, config, deadline, state.model_sized)
            results = await state.caption_loaded(loaded, resolve_options(), deadline, client)
        records = []
        for r in results:
            record = r.to_record()
            record["alt_text"] = to_alt_text(r.caption, max_chars) if r.caption else None
            records.append(record)
        return JSONResponse({"results": records})

    return router


async def check_html(
    state: ServerState, html: str, max_chars: int, deadline: float, client: str
) -> dict[str, Any]:
    """The engine's findings for the fragment ``html`` and the fragment with the proposals in."""
    from ...alttext.write import apply_edits, edits_for

    loop = asyncio.get_running_loop()
    with decode_token(deadline) as cancel:
        captions = BatcherCaptions(state.blocking_captioner(loop, client, cancel))
        try:
            run = await asyncio.wait_for(
                run_in_threadpool(_run_engine, html, max_chars, captions, _reader(state, deadline)),
                max(deadline - time.monotonic(), 0.001),
            )
        except asyncio.TimeoutError:
            raise DeadlineError(
                "the fragment was not checked within the request deadline"
            ) from None
    [page] = run.pages
    if page.error or page.decoded is None:
        raise RequestError(422, page.error or "the fragment could not be read")
    fixed = apply_edits(page.decoded, edits_for(page.findings))
    return {
        "findings": [_finding(f) for f in page.findings],
        "html": fixed.decode(page.decoded.encoding, "replace"),
        "random_weights": bool(getattr(state.captioner, "random_weights", False)),
    }


def _run_engine(html: str, max_chars: int, captions: BatcherCaptions, reader) -> Run:
    """Run the alt-text engine over the fragment, written to a private temporary page."""
    from ...alttext.engine import AltTextOptions, run_alt_text

    with tempfile.TemporaryDirectory(prefix="blipcap-alt-") as tmp:
        path = Path(tmp) / FRAGMENT
        path.write_bytes(html.encode("utf-8"))
        run = run_alt_text(
            [path], AltTextOptions(max_chars=max_chars), captions=captions, reader=reader
        )
    for page in run.pages:  # messages name the fragment, never the temporary path
        if page.error:
            page.error = re.sub(re.escape(str(path)), FRAGMENT, page.error)
    return run


def _reader(state: ServerState, deadline: float):
    """How the engine reads an image here: data: URIs and http(s) URLs only."""
    config = state.config

    def read(ref: Resolved) -> bytes:
        if ref.data is None and ref.url is None and not ref.src.startswith("data:"):
            raise InputError(
                f"{ref.src or 'the image'}: the server reads only data: URIs and http(s) URLs; "
                "check the page with 'blipcap alt-text' on your machine instead"
            )
        if ref.error:
            raise InputError(ref.error)
        if ref.data is not None:
            return ref.data
        remaining = max(deadline - time.monotonic(), 0.001)
        return fetch(  # type: ignore[arg-type]
            ref.url, max_bytes=config.max_body_bytes, timeout=min(config.fetch_timeout, remaining)
        )

    return read


class BatcherCaptions:
    """The engine's caption source on the server: the shared model, through the batcher."""

    def __init__(self, captioner: Any):
        self._captioner = captioner  # a BatchedCaptioner (see ServerState.blocking_captioner)

    def key(self) -> str:
        return f"{getattr(self._captioner, 'model_id', 'model')}|server"

    def caption(self, images: list, progress: bool = False):
        """As :meth:`blipcap.alttext.sources.BlipCaptions.caption`: (caption, error, confidence)."""
        from ...alttext.doubts import confidence_score

        results = self._captioner.caption(images)
        random_weights = bool(getattr(self._captioner, "random_weights", False))
        rows = [
            (
                r.caption,
                r.error.message if r.error else None,
                confidence_score(getattr(r, "confidence", None)),
            )
            for r in results
        ]
        return rows, {}, random_weights


def _finding(f: Any) -> dict[str, Any]:
    e = f.element
    info = f.image
    return {
        "line": e.line,
        "column": e.column,
        "element": e.kind,
        "src": e.src,
        "current_alt": e.alt,
        "status": f.status,
        "purpose": f.purpose,
        "problems": [{"rule": p.rule, "message": p.message} for p in f.problems],
        "proposed_alt": f.proposed,
        "reason": f.reason,
        "notes": list(f.notes),
        "caption": info.caption if info else None,
        "image_error": info.error if info else None,
    }
