"""Read the text in an image with a chosen OCR engine (one engine per process per settings)."""

from __future__ import annotations

from functools import lru_cache

from PIL import Image

from ..errors import OptionsError
from .layout import lines_to_text, reading_order
from .lines import OcrResult
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
    RapidOCR's bundled model reads English and Chinese. Lines whose
    confidence is below ``min_confidence`` are dropped. ``detect_px`` (RapidOCR) is the
    longest side text detection looks at, ``DETECT_PX`` by default: less is faster and
    misses smaller text.
    """
    ocr = get_ocr_engine(engine, lang if engine == "tesseract" else "eng")
    if isinstance(ocr, RapidOcrEngine):
        found, rotation = ocr.recognize(image, detect_px or DETECT_PX)
    else:
        found, rotation = ocr.recognize(image)
    lines = [ln for ln in found if ln.confidence >= min_confidence]
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
