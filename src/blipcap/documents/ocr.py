"""Read the text in an image with a chosen OCR engine (one engine per process per settings)."""

from __future__ import annotations

from functools import lru_cache

from PIL import Image

from ..errors import OptionsError
from .layout import lines_to_text, reading_order
from .lines import OcrLine, OcrResult
from .rapidocr import DETECT_PX, RapidOcrEngine
from .tesseract import TesseractEngine

OCR_ENGINES = ("rapidocr", "tesseract")


@lru_cache(maxsize=8)
def get_ocr_engine(engine: str = "rapidocr", lang: str = "eng") -> RapidOcrEngine | TesseractEngine:
    """One engine per process per settings (models load once)."""
    if engine == "rapidocr":
        return RapidOcrEngine()
    if engine == "tesseract":
        return TesseractEngine(lang=lang)
    raise OptionsError(f"unknown OCR engine {engine!r}; choose one of: {', '.join(OCR_ENGINES)}")


def ocr_image(
    image: Image.Image,
    engine: str = "rapidocr",
    *,
    lang: str = "eng",
    min_confidence: float = 0.5,
    detect_px: int | None = None,
) -> OcrResult:
    """Read the text in ``image``: lines in reading order with boxes and confidences.

    ``lang`` applies to Tesseract (any installed traineddata, e.g. ``deu``);
    RapidOCR's bundled model reads Chinese, Japanese, English and most Latin-script
    languages. Lines whose confidence is below ``min_confidence`` are dropped, and so are
    one- or two-character "lines" boxed over more than ``MAX_SHORT_LINE_AREA`` of the
    image (a detector's false find in a photo, read as "8" or "0"). ``detect_px`` (RapidOCR) is the
    longest side text detection looks at, ``DETECT_PX`` by default: less is faster and
    misses smaller text.
    """
    ocr = get_ocr_engine(engine, lang if engine == "tesseract" else "eng")
    if isinstance(ocr, RapidOcrEngine):
        found, rotation = ocr.recognize(image, detect_px or DETECT_PX)
    else:
        found, rotation = ocr.recognize(image)
    area = max(image.width * image.height, 1)
    lines = [ln for ln in found if ln.confidence >= min_confidence and _plausible(ln, area)]
    if engine == "rapidocr":  # Tesseract does its own page-layout analysis
        lines = reading_order(lines)
    return OcrResult(
        text=lines_to_text(lines),
        lines=lines,
        engine=ocr.name,
        width=image.width,
        height=image.height,
        rotation=rotation,
    )


MAX_SHORT_LINE_AREA = 0.05
"""Share of the image above which a line of one or two characters is taken for a false
detection (PP-OCRv6 boxes whole regions of some photos; benchmarks/results/ocr-models.md)."""


def _plausible(line: OcrLine, image_area: int) -> bool:
    left, top, right, bottom = line.box
    box_area = max(right - left, 0) * max(bottom - top, 0)
    return len(line.text.strip()) > 2 or box_area <= MAX_SHORT_LINE_AREA * image_area
