"""``POST /v1/documents``: OCR text and a description for one image or PDF.

Offered when an OCR engine is installed (RapidOCR or the ``tesseract``
program). Its captions go through the shared micro-batcher.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..._optional import available
from ...errors import ImageTooLargeError, InputError, UnsupportedFormatError
from ..batcher import DeadlineError, QueueFullError
from ..inputs import RawInput, RequestError, decode_token, fetch, parse_request, status_for
from ..schemas import DocumentRequest
from .common import FEATURE_ERRORS

if TYPE_CHECKING:
    from ..app import ServerState

FEATURE = "documents"
BODIES = {"/v1/documents": DocumentRequest}
MAX_PDF_PAGES = 20
MAX_WAITING = 4
"""Documents being read or waiting (one reads at a time); beyond it 503."""


def ocr_engine() -> str | None:
    if available("rapidocr"):
        return "rapidocr"
    if shutil.which("tesseract"):
        return "tesseract"
    return None


def router(state: ServerState) -> APIRouter | None:
    default_engine = ocr_engine()
    if default_engine is None:
        return None
    from ...documents import pdf_page_count, read_document

    config = state.config
    router = APIRouter(tags=["documents"])
    # OCR is CPU-heavy: one document at a time, a short line, then 503.
    gate = asyncio.Semaphore(1)
    waiting = 0

    @router.post("/v1/documents", responses=FEATURE_ERRORS)
    async def documents(request: Request) -> JSONResponse:
        """OCR text (reading order) and a description for one image or PDF (up to 20 pages)."""
        nonlocal waiting
        client = state.client_of(request)
        with state.admit(client):
            deadline = time.monotonic() + config.request_timeout
            parsed = await parse_request(request, config, DocumentRequest)
            if len(parsed.inputs) != 1:
                raise RequestError(422, "send exactly one document per request")
            engine = parsed.fields.get("engine", default_engine)
            data = await _document_bytes(parsed.inputs[0], state)
            if waiting >= MAX_WAITING:  # one reading, three waiting: the rest come back later
                raise QueueFullError("too many documents waiting for OCR; retry later", 5)
            waiting += 1
            try:
                async with gate:
                    remaining = deadline - time.monotonic()
                    loop = asyncio.get_running_loop()
                    with decode_token(deadline) as cancel:
                        captioner = (
                            state.blocking_captioner(loop, client, cancel)
                            if parsed.fields["caption"]
                            else None
                        )
                        doc = await asyncio.wait_for(
                            run_in_threadpool(
                                _read_upload, data, parsed.inputs[0].name,
                                (read_document, pdf_page_count), captioner, engine,
                                parsed.fields["lang"],
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

    return router


async def _document_bytes(raw: RawInput, state: ServerState) -> bytes:
    if raw.url is None:
        return raw.data or b""
    config = state.config
    return await run_in_threadpool(
        fetch, raw.url, max_bytes=config.max_body_bytes, timeout=config.fetch_timeout
    )


_ERROR_TYPES = {cls.__name__: cls for cls in (UnsupportedFormatError, ImageTooLargeError)}


def _read_upload(data: bytes, name, readers, captioner, engine, lang) -> Any:
    """Write the upload to a private temporary file and read it (documents work on paths).

    Every message names the upload by its client file name (else "document"),
    never by the server's temporary path.
    """
    read_document, pdf_page_count = readers
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
