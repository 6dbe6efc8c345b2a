"""The document model: a file's pages with their OCR, caption and fused description, and
:func:`read_document`, which builds one from a PDF or an image file."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import InputError
from ..options import CaptionOptions
from ..records import as_record
from ..results import CaptionModel
from .fusion import fuse_description
from .lines import OcrResult
from .ocr import ocr_image
from .pdf import DEFAULT_DPI, is_pdf, rasterize_pdf


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
        return as_record(
            self,
            "path kind ocr_engine description text pages error provenance",
            ocr_engine=self.engine,
            pages=[p.to_dict() for p in self.pages],
        )

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
    captioner: CaptionModel | None = None,
    engine: str = "rapidocr",
    lang: str = "eng",
    dpi: int = DEFAULT_DPI,
    pages: Iterable[int] | None = None,
    caption_options: CaptionOptions | None = None,
    on_page: Any = None,
) -> Document:
    """OCR (and, given a ``captioner``, caption) every page of a PDF or an image file.

    Errors about the input (unreadable, encrypted, not an image) are returned in
    ``Document.error``; a batch of documents carries on. ``on_page()`` is called
    after each page (progress bars).
    """
    from ..images import load_image

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
                result = captioner.caption([image], options=caption_options)[0]
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
