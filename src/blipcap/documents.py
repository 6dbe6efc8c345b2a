"""Documents and images of text: real OCR, reading order, PDF pages, and captions fused with text.

BLIP cannot read (salesforce/BLIP #37), so text comes from a real OCR engine:
RapidOCR (PP-OCRv4 ONNX models shipped in the ``rapidocr-onnxruntime`` wheel)
by default, or Tesseract (the ``tesseract`` program, Debian ``tesseract-ocr``).
The caption says what the page *is*; the OCR says what it *says*; the fused
description joins both: ``A letter on a desk that reads: "Dear ..."``.

>>> from blipcap.documents import ocr_image             # doctest: +SKIP
>>> ocr_image(pil_image).text                           # doctest: +SKIP
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image

from ._optional import require
from .errors import BlipcapError, CorruptImageError, InputError, OptionsError

OCR_ENGINES = ("rapidocr", "tesseract")
DETECT_PX = 2000
"""RapidOCR's text detector sees the image scaled to at most this many pixels (its default)."""
PHOTO_DETECT_PX = 960
"""Detection size for photo libraries (``blipcap index --ocr auto``): the detector sees a
quarter to a third of the pixels it sees at ``DETECT_PX``; lines found are still read from the full-resolution image.
Measured in benchmarks/index_ocr.py."""
DEFAULT_DPI = 300
# A PDF page is rendered at the requested DPI unless that would exceed this many
# pixels (a poster-sized or hostile MediaBox); then the DPI is lowered to fit.
MAX_PAGE_PIXELS = 50_000_000


@dataclass(frozen=True)
class OcrLine:
    """One line of text. ``box`` is (left, top, right, bottom) in image pixels."""

    text: str
    box: tuple[int, int, int, int]
    confidence: float

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


@dataclass(frozen=True)
class OcrResult:
    """The text of one image: lines in reading order, and their joined text.

    ``text`` has one line per text row, and a blank line between paragraphs
    and between columns.
    """

    text: str
    lines: list[OcrLine] = field(default_factory=list)
    engine: str = "rapidocr"
    width: int = 0
    height: int = 0
    rotation: int = 0
    """0, or 180 for a page read upside down: the boxes then refer to the image turned 180°."""

    @property
    def has_text(self) -> bool:
        return bool(self.text.strip())

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "engine": self.engine,
            "width": self.width,
            "height": self.height,
            "rotation": self.rotation,
            "lines": [
                {"text": ln.text, "box": list(ln.box), "confidence": round(ln.confidence, 4)}
                for ln in self.lines
            ],
        }


# --------------------------------------------------------------------------- engines


class RapidOcrEngine:
    """PP-OCRv4 detection + recognition through ONNX Runtime (models ship in the wheel).

    Detection runs on the page scaled to at most ``detect_px`` (2000 px, RapidOCR's
    default, unless the caller asks for less: a photo library uses ``PHOTO_DETECT_PX``);
    each detected line is then cut from the *full-resolution* image and
    enlarged so that it is at least 48 px high - the recognizer's input height.
    A line the angle classifier calls upside down is read both ways.
    Left to RapidOCR, lines are cut from the scaled page and stretched up with
    bilinear interpolation, which blurs the gaps between words away
    ("Invoicenumber4521").
    """

    name = "rapidocr"
    _REC_PX = 48
    _MAX_FACTOR = 4

    def __init__(self) -> None:
        module = require("rapidocr_onnxruntime", "ocr", "reading text in images (OCR)")
        # "slow" scores each detected polygon instead of its bounding box: a slanted
        # line squeezed between its neighbours keeps its score and is not dropped.
        self._ocr = module.RapidOCR(det_score_mode="slow")
        self._lock = threading.Lock()  # the engine keeps per-call state: one call at a time

    def recognize(
        self, image: Image.Image, detect_px: int = DETECT_PX
    ) -> tuple[list[OcrLine], int]:
        """Lines (boxes in the image's pixels) and the rotation they refer to: 180 when most
        lines read better turned round - an upside-down page, read again turned upright."""
        lines, turned = self._read(image, detect_px)
        if len(lines) >= 2 and turned > len(lines) / 2:
            upright, turned_again = self._read(image.rotate(180), detect_px)
            if turned_again < len(upright) / 2:
                return upright, 180
        return lines, 0

    def _read(self, image: Image.Image, detect_px: int) -> tuple[list[OcrLine], int]:
        import numpy as np

        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        turned_count = 0
        with self._lock:
            quads = self._detect(bgr, detect_px)
            if not quads:
                return [], 0
            crops = [self._crop(bgr, q) for q in quads]
            texts = self._recognize_lines(crops)
            # The angle classifier squeezes a line into 192 px, so long lines are often
            # called upside down when they are not: read a line both ways when it says so,
            # and keep the reading the recognizer is surer of.
            turned, verdicts, _ = self._ocr.text_cls(crops)
            flagged = [i for i, (label, _) in enumerate(verdicts) if label == "180"]
            if flagged:
                again = self._recognize_lines([turned[i] for i in flagged])
                for i, reading in zip(flagged, again, strict=True):
                    if reading[1] > texts[i][1]:
                        texts[i] = reading
                        turned_count += 1
        lines = []
        for quad, (text, score) in zip(quads, texts, strict=True):
            box = (
                int(round(float(quad[:, 0].min()))),
                int(round(float(quad[:, 1].min()))),
                int(round(float(quad[:, 0].max()))),
                int(round(float(quad[:, 1].max()))),
            )
            if text.strip():
                lines.append(OcrLine(" ".join(text.split()), box, float(score)))
        return lines, turned_count

    def _detect(self, bgr: Any, detect_px: int) -> list[Any]:
        """Text-line quadrilaterals in ``bgr``'s pixels, found on a copy scaled to at most
        ``detect_px`` on its longest side (detection is most of the cost on a photo)."""
        import cv2
        import numpy as np

        scale = min(1.0, detect_px / max(bgr.shape[:2]))
        if detect_px >= DETECT_PX:  # RapidOCR scales the page to DETECT_PX itself, as it always has
            scale = 1.0
        if scale < 1.0:
            size = (max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale)))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        boxes, _ = self._ocr(bgr, use_det=True, use_cls=False, use_rec=False)
        return [np.asarray(b, dtype=np.float32).reshape(4, 2) / scale for b in boxes or []]

    def _recognize_lines(self, crops: list[Any]) -> list[tuple[str, float]]:
        results, _ = self._ocr.text_rec(crops)
        return [(text, float(score)) for text, score in results]

    def _crop(self, bgr: Any, quad: Any) -> Any:
        import cv2
        import numpy as np

        width = max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3]))
        height = max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2]))
        factor = min(self._MAX_FACTOR, max(1, math.ceil(self._REC_PX / max(height, 1.0))))
        out_w, out_h = max(1, int(width * factor)), max(1, int(height * factor))
        target = np.array([[0, 0], [out_w, 0], [out_w, out_h], [0, out_h]], dtype=np.float32)
        matrix = cv2.getPerspectiveTransform(quad, target)
        crop = cv2.warpPerspective(
            bgr, matrix, (out_w, out_h), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
        )
        if out_h / out_w >= 1.5:  # a vertical line of text: read it lying down
            crop = np.rot90(crop)
        return crop


class TesseractEngine:
    """The ``tesseract`` program (5.x), read through its TSV output."""

    name = "tesseract"

    def __init__(self, lang: str = "eng", timeout: float = 300.0) -> None:
        binary = shutil.which("tesseract")
        if binary is None:
            raise BlipcapError(
                "the 'tesseract' program is not installed. Install it with: "
                "apt-get install tesseract-ocr (or use the default engine, rapidocr)"
            )
        self.binary = binary
        self.lang = lang
        self.timeout = timeout

    def recognize(self, image: Image.Image) -> tuple[list[OcrLine], int]:
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        # --psm 3: automatic page layout. Sauvola binarization (thresholding_method=2)
        # copes with the uneven lighting of scans and photos, where global Otsu
        # loses whole shaded margins.
        cmd = [self.binary, "stdin", "stdout", "-l", self.lang, "--psm", "3"]
        cmd += ["-c", "thresholding_method=2", "tsv"]
        env = dict(os.environ, OMP_THREAD_LIMIT=os.environ.get("OMP_THREAD_LIMIT", "1"))
        try:
            proc = subprocess.run(
                cmd, input=buf.getvalue(), capture_output=True, timeout=self.timeout, env=env
            )
        except subprocess.TimeoutExpired:
            raise InputError(
                f"tesseract took longer than {self.timeout:.0f} s on one page"
            ) from None
        if proc.returncode != 0:
            detail = proc.stderr.decode(errors="replace").strip().splitlines()
            raise BlipcapError(
                f"tesseract failed: {detail[-1] if detail else proc.returncode}. "
                f"Is the language pack installed? (apt-get install tesseract-ocr-{self.lang})"
            )
        return parse_tesseract_tsv(proc.stdout.decode("utf-8", errors="replace")), 0


def parse_tesseract_tsv(tsv: str) -> list[OcrLine]:
    """Group Tesseract's word rows into lines, keeping its reading order."""
    groups: dict[tuple[str, ...], list[tuple[str, int, int, int, int, float]]] = {}
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5" or not cols[11].strip():
            continue
        left, top, width, height = (int(c) for c in cols[6:10])
        conf = float(cols[10])
        key = tuple(cols[1:5])  # page, block, paragraph, line
        groups.setdefault(key, []).append((cols[11], left, top, left + width, top + height, conf))
    lines = []
    for words in groups.values():
        box = (
            min(w[1] for w in words),
            min(w[2] for w in words),
            max(w[3] for w in words),
            max(w[4] for w in words),
        )
        confidence = sum(max(w[5], 0.0) for w in words) / len(words) / 100.0
        lines.append(OcrLine(" ".join(w[0] for w in words), box, confidence))
    return lines


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


# --------------------------------------------------------------------------- reading order


def reading_order(lines: Sequence[OcrLine]) -> list[OcrLine]:
    """Order lines as a person reads them: recursive X-Y cut.

    A region is split at a vertical gap (a column gutter) when one exists,
    else at its widest horizontal gap; what cannot be split is one row, read
    left to right. A full-width heading above two columns is therefore read
    first, then the left column, then the right one.
    """
    if len(lines) <= 1:
        return list(lines)
    heights = sorted(max(ln.height, 1) for ln in lines)
    min_gutter = heights[len(heights) // 2]  # a gutter is at least about one line high
    return _xy_cut(list(lines), min_gutter)


def _gaps(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The empty intervals between the union of ``spans``, as (start, end)."""
    spans = sorted(spans)
    gaps, reach = [], spans[0][1]
    for start, end in spans[1:]:
        if start > reach:
            gaps.append((reach, start))
        reach = max(reach, end)
    return gaps


def _xy_cut(lines: list[OcrLine], min_gutter: int) -> list[OcrLine]:
    if len(lines) <= 1:
        return lines
    vertical = [
        g for g in _gaps([(ln.box[0], ln.box[2]) for ln in lines]) if g[1] - g[0] >= min_gutter
    ]
    if vertical:
        cut = max(vertical, key=lambda g: g[1] - g[0])[0]
        left = [ln for ln in lines if ln.box[2] <= cut]
        right = [ln for ln in lines if ln.box[2] > cut]
        return _xy_cut(left, min_gutter) + _xy_cut(right, min_gutter)
    # Boxes of neighbouring lines often overlap by a few pixels (slanted scans):
    # cut where the line centres are far apart instead of requiring empty space.
    ordered = sorted(lines, key=lambda ln: (ln.box[1] + ln.box[3]) / 2)
    best, best_gap = None, 0.0
    for i in range(1, len(ordered)):
        a, b = ordered[i - 1], ordered[i]
        gap = (b.box[1] + b.box[3]) / 2 - (a.box[1] + a.box[3]) / 2
        if gap > 0.5 * min(a.height, b.height) and gap > best_gap:
            best, best_gap = i, gap
    if best is None:  # one row: read left to right
        return sorted(lines, key=lambda ln: ln.box[0])
    return _xy_cut(ordered[:best], min_gutter) + _xy_cut(ordered[best:], min_gutter)


def lines_to_text(lines: Sequence[OcrLine]) -> str:
    """Join ordered lines: words on one row share a line; a blank line separates paragraphs.

    A new paragraph starts where the vertical gap to the previous row is more
    than one and a half line heights (a blank line even in double-spaced text),
    or where reading jumps back up (a new column).
    """
    rows: list[list[OcrLine]] = []
    for ln in lines:
        prev = rows[-1][-1] if rows else None
        same_row = (
            prev is not None
            and ln.box[0]
            >= prev.box[2] - 0.25 * min(ln.height, prev.height)  # boxes of words touch
            and abs((ln.box[1] + ln.box[3]) - (prev.box[1] + prev.box[3])) / 2
            < 0.5 * min(ln.height, prev.height)
        )
        if same_row:
            rows[-1].append(ln)
        else:
            rows.append([ln])
    out: list[str] = []
    prev_box: tuple[int, int, int, int] | None = None
    for row in rows:
        box = (
            min(r.box[0] for r in row),
            min(r.box[1] for r in row),
            max(r.box[2] for r in row),
            max(r.box[3] for r in row),
        )
        if prev_box is not None:
            line_h = min(box[3] - box[1], prev_box[3] - prev_box[1])
            gap = box[1] - prev_box[3]
            if gap > 1.5 * line_h or box[3] <= prev_box[1]:
                out.append("")
        out.append(" ".join(r.text for r in row))
        prev_box = box
    return "\n".join(out)


# --------------------------------------------------------------------------- fusion


def fuse_description(
    caption: str | None,
    text: str,
    *,
    subject: str = "An image with the text",
    max_text_chars: int | None = None,
) -> str:
    """One description from a caption and the text in the image.

    ``fuse_description("a letter on a desk", "Dear Ann")`` gives
    ``A letter on a desk that reads: "Dear Ann"``. Without a caption the
    ``subject`` leads (``An image with the text: "Dear Ann"``); without text the
    caption stands alone. ``max_text_chars`` shortens the quoted text at a word
    boundary, ending it with an ellipsis.
    """
    flat = " ".join(text.split())
    if max_text_chars is not None and len(flat) > max_text_chars:
        cut = flat[: max_text_chars + 1].rsplit(" ", 1)[0] if " " in flat[:max_text_chars] else ""
        flat = (cut or flat[:max_text_chars]).rstrip(" ,;:.") + "…"
    head = (caption or "").strip().rstrip(".").strip()
    head = head[:1].upper() + head[1:]
    if not flat:
        return f"{head}." if head else ""
    if head:
        return f'{head} that reads: "{flat}"'
    return f'{subject}: "{flat}"'


# --------------------------------------------------------------------------- PDF


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
    from .images import open_regular_file

    try:
        with open_regular_file(path) as fh:
            return fh.read(5) == b"%PDF-"
    except (OSError, InputError):
        return False


# --------------------------------------------------------------------------- documents


@dataclass
class DocumentPage:
    """One page (or the one image) of a document."""

    number: int
    width: int
    height: int
    ocr: OcrResult
    caption: str | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = {"page": self.number, "width": self.width, "height": self.height}
        d.update(caption=self.caption, description=self.description, text=self.ocr.text)
        d["lines"] = self.ocr.to_dict()["lines"]
        return d


@dataclass
class Document:
    """The result of reading one file: its pages, or an error."""

    path: str
    kind: str  # "pdf" or "image"
    pages: list[DocumentPage] = field(default_factory=list)
    engine: str = "rapidocr"
    error: dict[str, str] | None = None
    provenance: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return "\n\n".join(p.ocr.text for p in self.pages if p.ocr.text)

    @property
    def description(self) -> str:
        if len(self.pages) == 1:
            return self.pages[0].description
        return "\n".join(f"Page {p.number}: {p.description}" for p in self.pages if p.description)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "ocr_engine": self.engine,
            "description": self.description,
            "text": self.text,
            "pages": [p.to_dict() for p in self.pages],
            "error": self.error,
            "provenance": self.provenance,
        }

    def to_markdown(self) -> str:
        out = [f"# {Path(self.path).name}", ""]
        if self.error:
            return "\n".join(
                out + [f"**Error** ({self.error['type']}): {self.error['message']}", ""]
            )
        for p in self.pages:
            if self.kind == "pdf":
                out += [f"## Page {p.number}", ""]
            if p.description:
                out += [f"> {_md_escape(p.description)}", ""]
            for paragraph in p.ocr.text.split("\n\n"):
                if paragraph.strip():
                    out += [_md_escape(paragraph), ""]
        return "\n".join(out)

    def to_text(self) -> str:
        if self.error:
            return f"{self.path}: error: {self.error['message']}"
        parts = []
        for p in self.pages:
            header = (
                f"== {self.path}" + (f" (page {p.number})" if self.kind == "pdf" else "") + " =="
            )
            parts.append(
                "\n".join(
                    x for x in (header, p.caption and f"Caption: {p.caption}", p.ocr.text) if x
                )
            )
        return "\n\n".join(parts)


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>#|"})


def _md_escape(text: str) -> str:
    """OCR text as literal Markdown: no stray emphasis, links, headings or tables."""
    return text.translate(_MD_SPECIAL)


def read_document(
    source: str | os.PathLike[str],
    *,
    captioner: Any = None,
    engine: str = "rapidocr",
    lang: str = "eng",
    dpi: int = DEFAULT_DPI,
    pages: Iterable[int] | None = None,
    caption_kwargs: dict[str, Any] | None = None,
    on_page: Any = None,
) -> Document:
    """OCR (and, given a ``captioner``, caption) every page of a PDF or an image file.

    Errors about the input (unreadable, encrypted, not an image) are returned in
    ``Document.error``; a batch of documents carries on. ``on_page()`` is called
    after each page (progress bars).
    """
    from .images import load_image

    path = os.fspath(source)
    kind = "pdf" if is_pdf(path) else "image"
    doc = Document(path=path, kind=kind, engine=engine)
    try:
        if kind == "pdf":
            images: Iterable[tuple[int, Image.Image]] = rasterize_pdf(path, dpi=dpi, pages=pages)
        else:
            images = [(1, load_image(path))]
        for number, image in images:
            ocr = ocr_image(image, engine, lang=lang)
            caption = None
            if captioner is not None:
                result = captioner.caption([image], **(caption_kwargs or {}))[0]
                if result.error is not None:
                    raise InputError(result.error.message)
                caption = result.caption
                if doc.provenance is None and result.provenance is not None:
                    doc.provenance = asdict(result.provenance)
            subject = "A page with the text" if kind == "pdf" else "An image with the text"
            page = DocumentPage(number, image.width, image.height, ocr, caption)
            page.description = fuse_description(caption, ocr.text, subject=subject)
            doc.pages.append(page)
            if on_page is not None:
                on_page()
    except InputError as exc:
        doc.error = {"type": type(exc).__name__, "message": str(exc)}
    return doc
