"""Routes for the features built on captioning: alt text, documents, search.

Each is installed only when its module and its runtime are there: alt text
always (pure Python), documents when an OCR engine is installed (RapidOCR or
the ``tesseract`` program), search when the server was given ``--db``. Their
captions go through the shared micro-batcher like every other request.

The alt-text endpoint reads images only from ``data:`` URIs and http(s) URLs
(through the SSRF-safe fetcher): a fragment's relative or ``file:`` paths
would point into the server's own disk, so they are reported, never read.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from starlette.concurrency import run_in_threadpool

from .._optional import available
from ..errors import DecodeCancelledError, ImageTooLargeError, InputError, UnsupportedFormatError
from ..images import CancelToken
from ..options import resolve_options
from ..text import to_alt_text
from . import schemas
from .batcher import DeadlineError, QueueFullError
from .inputs import (
    Loaded,
    RawInput,
    RequestError,
    decode_token,
    load_inputs,
    parse_request,
    status_for,
)


class AltTextRequest(BaseModel):
    """An HTML fragment to check, or images to describe (as for /v1/captions)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["html"]}, {"required": ["images"]}]},
    )

    html: Annotated[str, Field(max_length=2_000_000)] | SkipJsonSchema[None] = None
    images: Annotated[list[schemas.ImageRef], Field(min_length=1)] | SkipJsonSchema[None] = None
    max_chars: Annotated[int, Field(ge=20, le=1000)] = 150


MULTIPART_ALT = {
    "type": "object",
    "properties": {
        "files": schemas.MULTIPART_CAPTIONS["properties"]["files"],
        "max_chars": {"type": "integer", "minimum": 20, "maximum": 1000},
    },
    "required": ["files"],
    "additionalProperties": False,
}


class DocumentJson(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: Annotated[list[schemas.ImageRef], Field(min_length=1, max_length=1)]
    engine: Literal["rapidocr", "tesseract"] | None = None
    lang: Annotated[str, Field(pattern=r"^[a-z_+]{3,40}$")] = "eng"
    caption: bool = True


MULTIPART_DOCUMENT = {
    "type": "object",
    "properties": {
        "files": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "minItems": 1,
            "maxItems": 1,
            "description": "One image or PDF.",
        },
        "engine": {"type": "string", "enum": ["rapidocr", "tesseract"]},
        "lang": {
            "type": "string",
            "pattern": "^[a-z_+]{3,40}$",
            "description": "Tesseract language(s), e.g. eng or deu+eng",
        },
        "caption": {"type": "string", "enum": ["true", "false"]},
    },
    "required": ["files"],
    "additionalProperties": False,
}

MAX_PDF_PAGES = 20


def install_features(app: FastAPI, state: Any) -> None:
    names: list[str] = []
    bodies: dict[str, tuple[type[BaseModel], dict]] = {}
    _install_alt_text(app, state)
    names.append("alt-text")
    bodies["/v1/alt-text"] = (AltTextRequest, MULTIPART_ALT)
    engine = _ocr_engine()
    if engine is not None:
        _install_documents(app, state, engine)
        names.append("documents")
        bodies["/v1/documents"] = (DocumentJson, MULTIPART_DOCUMENT)
    if state.config.db:
        _install_search(app, state)
        names.append("search")
    state.features = {"names": names, "bodies": bodies}


def _ocr_engine() -> str | None:
    if available("rapidocr_onnxruntime"):
        return "rapidocr"
    if shutil.which("tesseract"):
        return "tesseract"
    return None


# --------------------------------------------------------------------------- alt text
def _install_alt_text(app: FastAPI, state: Any) -> None:
    from ..alttext.judge import JudgeOptions, judge_image, judge_markup, needs_image
    from ..alttext.model import ImageInfo

    config = state.config

    @app.post("/v1/alt-text", tags=["alt text"], responses=_ERRORS)
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
            options = resolve_options()
            if parsed.fields.get("html") is not None:
                if parsed.inputs:
                    raise RequestError(422, "send either 'html' or 'images', not both")
                return JSONResponse(
                    await _check_html(parsed.fields["html"], max_chars, deadline, client)
                )
            if not parsed.inputs:
                raise RequestError(422, "send 'html' (a fragment) or 'images'")
            with state.batcher.expecting(len(parsed.inputs)):
                loaded = await load_inputs(parsed.inputs, config, deadline, state.model_sized)
            results = await state.caption_loaded(loaded, options, deadline, client)
        records = []
        for r in results:
            record = r.to_record()
            record["alt_text"] = to_alt_text(r.caption, max_chars) if r.caption else None
            records.append(record)
        return JSONResponse({"results": records})

    async def _check_html(html: str, max_chars: int, deadline: float, client: str) -> dict:
        from ..alttext.encoding import decode
        from ..alttext.scan_html import scan_html
        from ..alttext.sources import decode_data_uri
        from ..alttext.write import apply_edits, edits_for

        opts = JudgeOptions(max_chars=max_chars)
        decoded = decode(html.encode("utf-8"), html=True, path="fragment.html")
        elements = await run_in_threadpool(scan_html, decoded.text, Path("fragment.html"))
        findings = [judge_markup(e, opts) for e in elements]
        wanted = [f for f in findings if needs_image(f)]
        raws: list[RawInput] = []
        refused: dict[int, str] = {}
        for k, f in enumerate(wanted):
            src = next(
                (s.strip() for s in f.element.sources or [] if _readable_src(s.strip())), None
            )
            if src is None:
                refused[k] = (
                    f"{f.element.src or 'the image'}: the server reads only data: URIs and "
                    "http(s) URLs; check the page with 'blipcap alt-text' on your machine instead"
                )
                raws.append(RawInput(f.element.src, data=b""))
            elif src.startswith("data:"):
                try:
                    raws.append(RawInput("data: URI", data=decode_data_uri(src)))
                except ValueError as exc:
                    refused[k] = f"bad data: URI ({exc})"
                    raws.append(RawInput("data: URI", data=b""))
            else:
                raws.append(RawInput(src, url=src if not src.startswith("//") else "https:" + src))
        loaded = await load_inputs(
            [r for k, r in enumerate(raws) if k not in refused], config, deadline
        )
        merged: list[Loaded] = []
        it = iter(loaded)
        for k, raw in enumerate(raws):
            merged.append(
                Loaded(raw.name, error=InputError(refused[k])) if k in refused else next(it)
            )
        captions: list[Any] = [None] * len(merged)
        if any(m.image is not None for m in merged):
            results = await state.caption_loaded(merged, resolve_options(), deadline, client)
            captions = [r.caption for r in results]
        random_weights = bool(getattr(state.captioner, "random_weights", False))
        for f, m, caption in zip(wanted, merged, captions, strict=True):
            info = ImageInfo(random_weights=random_weights)
            if m.image is not None:
                info.width, info.height = m.image.size
                info.caption = caption
            else:
                info.error = str(m.error)
            judge_image(f, info, opts)
        fixed = apply_edits(decoded, edits_for(findings)).decode(decoded.encoding, "replace")
        return {
            "findings": [_finding(f) for f in findings],
            "html": fixed,
            "random_weights": random_weights,
        }


def _readable_src(src: str) -> bool:
    lower = src.lower()
    return lower.startswith(("data:", "http://", "https://", "//"))


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


# --------------------------------------------------------------------------- documents
def _install_documents(app: FastAPI, state: Any, default_engine: str) -> None:
    from ..documents import pdf_page_count, read_document

    config = state.config
    # OCR is CPU-heavy: one document at a time, a short line, then 503.
    gate = asyncio.Semaphore(1)
    waiting = 0

    @app.post("/v1/documents", tags=["documents"], responses=_ERRORS)
    async def documents(request: Request) -> JSONResponse:
        """OCR text (reading order) and a description for one image or PDF (up to 20 pages)."""
        nonlocal waiting
        client = state.client_of(request)
        with state.admit(client):
            deadline = time.monotonic() + config.request_timeout
            parsed = await parse_request(request, config, DocumentJson)
            if len(parsed.inputs) != 1:
                raise RequestError(422, "send exactly one document per request")
            engine = parsed.fields.get("engine", default_engine)
            lang = parsed.fields["lang"]
            want_caption = parsed.fields["caption"]
            raw = parsed.inputs[0]
            data = raw.data
            if raw.url is not None:
                from .inputs import fetch

                data = await run_in_threadpool(
                    fetch, raw.url, max_bytes=config.max_body_bytes, timeout=config.fetch_timeout
                )
            if waiting >= 4:  # one reading, three waiting: the rest come back later
                raise QueueFullError("too many documents waiting for OCR; retry later", 5)
            waiting += 1
            try:
                async with gate:
                    remaining = deadline - time.monotonic()
                    loop = asyncio.get_running_loop()
                    with decode_token(deadline) as cancel:
                        captioner = (
                            state.blocking_captioner(loop, client, cancel) if want_caption else None
                        )
                        doc = await asyncio.wait_for(
                            run_in_threadpool(
                                _read_upload, data or b"", raw.name, read_document,
                                pdf_page_count, captioner, engine, lang,
                            ),
                            max(remaining, 0.001),
                        )  # fmt: skip
            except asyncio.TimeoutError:
                raise DeadlineError(
                    "the document was not read within the request deadline"
                ) from None
            finally:
                waiting -= 1
        if doc.error:
            error = _ERROR_TYPES.get(doc.error["type"], InputError)(doc.error["message"])
            return JSONResponse({"detail": str(error)}, status_code=status_for(error))
        record = doc.to_dict()
        record["random_weights"] = bool(getattr(state.captioner, "random_weights", False))
        return JSONResponse(record)


_ERROR_TYPES = {cls.__name__: cls for cls in (UnsupportedFormatError, ImageTooLargeError)}


def _read_upload(data: bytes, name, read_document, pdf_page_count, captioner, engine, lang):
    """Write the upload to a private temporary file and read it (documents work on paths).

    Every message names the upload by its client file name (else "document"),
    never by the server's temporary path.
    """
    label = name or "document"
    is_pdf = data[:5] == b"%PDF-"
    with tempfile.TemporaryDirectory(prefix="blipcap-doc-") as tmp:
        path = Path(tmp) / ("upload.pdf" if is_pdf else "upload")
        path.write_bytes(data)
        os.chmod(path, 0o600)
        try:
            if is_pdf:
                _check_pages(pdf_page_count(path), label)
            doc = read_document(path, captioner=captioner, engine=engine, lang=lang)
        except InputError as exc:
            raise RequestError(status_for(exc), _relabel(str(exc), tmp, label)) from None
    doc.path = label
    if doc.error:
        doc.error["message"] = _relabel(doc.error["message"], tmp, label)
    return doc


def _check_pages(pages: int, label: str) -> None:
    if pages > MAX_PDF_PAGES:
        raise RequestError(
            413,
            f"{label}: {pages} pages; the server reads at most {MAX_PDF_PAGES} per "
            "request. Split the PDF, or use 'blipcap document' locally.",
        )


def _relabel(message: str, tmp: str, label: str) -> str:
    """``message`` with every path in the temporary directory ``tmp`` replaced by ``label``."""
    return re.sub(re.escape(tmp) + r"[^\s:'\"]*", lambda _: label, message)


# --------------------------------------------------------------------------- search
def _install_search(app: FastAPI, state: Any) -> None:
    from ..errors import BlipcapError

    db = state.config.db

    def open_index():
        from ..index import open_store

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

    @app.get("/v1/search", tags=["search"], responses=_ERRORS)
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

        from ..images import load_image

        for path in record.get("paths", []):
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

    @app.get(
        "/v1/thumbnails/{sha256}",
        tags=["search"],
        response_class=Response,
        responses={
            200: {"content": {"image/jpeg": {}}},
            404: {"model": schemas.ErrorResponse, "description": "No indexed image has this hash"},
            **{code: _ERRORS[code] for code in (401, 422, 503, 504)},
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


_ERRORS = {
    code: {"model": schemas.ErrorResponse, "description": text}
    for code, text in {
        400: "Malformed multipart body",
        401: "Missing or wrong API key (when keys are configured)",
        413: "Body, image, page or image count over the limits",
        415: "Not an allow-listed format, or an unsupported Content-Type",
        422: "Undecodable input, refused URL, or invalid fields",
        429: "Too many requests in flight from this client (see Retry-After)",
        503: "Busy, model not ready, or shutting down (see Retry-After)",
        504: "The request deadline passed",
    }.items()
}
