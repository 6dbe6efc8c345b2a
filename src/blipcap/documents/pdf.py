"""PDF pages: count them, and render them to images for OCR and captioning (pypdfium2)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from typing import Any

from PIL import Image

from .._optional import require
from ..errors import CorruptImageError, InputError, OptionsError

DEFAULT_DPI = 300
# A PDF page is rendered at the requested DPI unless that would exceed this many
# pixels (a poster-sized or hostile MediaBox); then the DPI is lowered to fit.
MAX_PAGE_PIXELS = 50_000_000


def pdf_page_count(source: str | os.PathLike[str] | bytes) -> int:
    pdfium = require("pypdfium2", "ocr", "reading PDF files")
    pdf = _open_pdf(pdfium, source)
    try:
        return len(pdf)
    finally:
        pdf.close()


def rasterize_pdf(
    source: str | os.PathLike[str] | bytes,
    *,
    dpi: int = DEFAULT_DPI,
    pages: Iterable[int] | None = None,
    max_pixels: int = MAX_PAGE_PIXELS,
) -> Iterator[tuple[int, Image.Image]]:
    """Render PDF pages to RGB images at ``dpi``; yields (1-based page number, image).

    ``pages`` selects 1-based page numbers (default: all). A page whose render
    would exceed ``max_pixels`` is rendered at the highest DPI that fits.
    """
    if dpi <= 0:
        raise OptionsError(f"dpi must be positive, not {dpi}")
    pdfium = require("pypdfium2", "ocr", "reading PDF files")
    pdf = _open_pdf(pdfium, source)
    try:
        count = len(pdf)
        wanted = range(1, count + 1) if pages is None else list(pages)
        for number in wanted:
            if not 1 <= number <= count:
                raise OptionsError(f"page {number} does not exist: the PDF has {count} page(s)")
            page = pdf[number - 1]
            try:
                width_pt, height_pt = page.get_size()
                scale = dpi / 72.0
                pixels = width_pt * scale * height_pt * scale
                if pixels > max_pixels:
                    scale *= math.sqrt(max_pixels / pixels)
                bitmap = page.render(scale=scale)
                image = bitmap.to_pil().convert("RGB")
                bitmap.close()
            finally:
                page.close()
            yield number, image
    finally:
        pdf.close()


def _open_pdf(pdfium: Any, source: str | os.PathLike[str] | bytes) -> Any:
    name = "<bytes>" if isinstance(source, bytes) else os.fspath(source)
    try:
        return pdfium.PdfDocument(source if isinstance(source, bytes) else os.fspath(source))
    except pdfium.PdfiumError as exc:
        msg = str(exc)
        if "password" in msg.lower():
            raise InputError(
                f"{name}: the PDF is encrypted; decrypt it first (qpdf --decrypt)."
            ) from None
        raise CorruptImageError(f"{name}: not a readable PDF ({msg}).") from None
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None


def is_pdf(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular file that starts like a PDF (a FIFO or device is never read)."""
    from ..images import open_regular_file

    try:
        with open_regular_file(path) as fh:
            return fh.read(5) == b"%PDF-"
    except (OSError, InputError):
        return False
