"""Documents and images of text: real OCR, reading order, PDF pages, and captions fused with text.

BLIP cannot read (salesforce/BLIP #37), so text comes from a real OCR engine:
RapidOCR (PP-OCRv6 ONNX models shipped in the ``rapidocr`` wheel)
by default, or Tesseract (the ``tesseract`` program, Debian ``tesseract-ocr``).
The caption says what the page *is*; the OCR says what it *says*; the fused
description joins both: ``A letter on a desk that reads: "Dear ..."``.

One module per concern: :mod:`.lines` (what an engine returns), :mod:`.rapidocr`
and :mod:`.tesseract` (the engines), :mod:`.ocr` (choose an engine, read an
image), :mod:`.layout` (reading order), :mod:`.pdf` (PDF pages), :mod:`.fusion`
(caption + text) and :mod:`.document` (the document model, :func:`read_document`).
Every public name is importable from here.

>>> from blipcap.documents import ocr_image             # doctest: +SKIP
>>> ocr_image(pil_image).text                           # doctest: +SKIP
"""

from __future__ import annotations

from .document import Document, DocumentPage, read_document
from .fusion import fuse_description
from .layout import lines_to_text, reading_order
from .lines import OcrLine, OcrResult
from .ocr import OCR_ENGINES, get_ocr_engine, ocr_image
from .pdf import DEFAULT_DPI, MAX_PAGE_PIXELS, is_pdf, pdf_page_count, rasterize_pdf
from .rapidocr import DETECT_PX, PHOTO_DETECT_PX, RapidOcrEngine
from .tesseract import TesseractEngine, parse_tesseract_tsv

__all__ = [
    "DEFAULT_DPI",
    "DETECT_PX",
    "Document",
    "DocumentPage",
    "MAX_PAGE_PIXELS",
    "OCR_ENGINES",
    "OcrLine",
    "OcrResult",
    "PHOTO_DETECT_PX",
    "RapidOcrEngine",
    "TesseractEngine",
    "fuse_description",
    "get_ocr_engine",
    "is_pdf",
    "lines_to_text",
    "ocr_image",
    "parse_tesseract_tsv",
    "pdf_page_count",
    "rasterize_pdf",
    "read_document",
    "reading_order",
]
