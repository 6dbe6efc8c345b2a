"""``blipcap document``: read scanned documents, PDFs and images of text."""

from __future__ import annotations

import json
import sys

import click

from ..errors import BlipcapError
from .common import (
    cli_errors,
    decoding_options,
    json_option,
    model_options,
    open_captioner,
    pop_caption_options,
    progress_option,
    show_progress,
    warn,
)


def parse_pages(spec: str | None) -> list[int] | None:
    """'1-3,5' -> [1, 2, 3, 5]; None -> None (all pages)."""
    if spec is None:
        return None
    pages: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                first, last = (int(x) for x in part.split("-", 1))
                if first < 1 or last < first:
                    raise ValueError
                pages.extend(range(first, last + 1))
            else:
                number = int(part)
                if number < 1:
                    raise ValueError
                pages.append(number)
    except ValueError:
        raise click.BadParameter(
            f"{spec!r}: use page numbers and ranges like 1-3,5", param_hint="--pages"
        ) from None
    return list(dict.fromkeys(pages))


def _count_pages(files: tuple[str, ...], pages: list[int] | None) -> int:
    """Pages the run will read, for the progress bar (an unreadable PDF counts as one)."""
    from ..documents import is_pdf, pdf_page_count

    total = 0
    for path in files:
        if not is_pdf(path):
            total += 1
            continue
        try:
            count = pdf_page_count(path)
        except BlipcapError:
            count = 1
        total += len([p for p in pages if p <= count]) if pages is not None else count
    return total


@click.command(
    "document",
    epilog="""\b
Examples:
  blipcap document scan.jpg                        # caption + text, as plain text
  blipcap document letter.pdf --format markdown > letter.md
  blipcap document invoice.pdf --pages 1-2 --json  # lines with boxes and confidences
  blipcap document screenshot.png --no-caption     # OCR only, no captioning model
  blipcap document page.tif --ocr tesseract --lang deu

PDF pages are rendered at 300 DPI (--dpi). Text comes from real OCR:
RapidOCR (PP-OCRv6, bundled) by default, or Tesseract (--ocr tesseract; needs
the tesseract-ocr package and its language data). The description fuses the
caption with the text: 'A letter on a desk that reads: "Dear ..."'.
Exit status: 0 when every file was read, 1 when some failed, 2 on usage or
configuration errors, 3 when the model could not be found or loaded.
""",
)
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(dir_okay=False), metavar="FILE.pdf|IMAGE..."
)
@click.option(
    "--ocr", type=click.Choice(["rapidocr", "tesseract"]), default="rapidocr", show_default=True
)
@click.option(
    "--lang", default="eng", show_default=True, help="Tesseract language(s), e.g. eng+deu."
)
@click.option("--dpi", type=click.IntRange(min=30, max=1200), default=300, show_default=True)
@click.option(
    "--pages", default=None, metavar="SPEC", help="PDF pages to read, e.g. 1-3,5 [default: all]."
)
@click.option("--no-caption", is_flag=True, help="OCR only: do not load the captioning model.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per file (JSON Lines) with every line's box and confidence.",
)
@json_option("Same as --format json.")
@progress_option
@model_options
@decoding_options
@cli_errors
def document(
    files,
    ocr,
    lang,
    dpi,
    pages,
    no_caption,
    fmt,
    as_json,
    progress,
    model,
    backend,
    device,
    dtype,
    **flags,
):
    """Read documents: OCR text in reading order, a caption, and both fused into one description."""
    from ..documents import read_document

    if as_json:
        fmt = "json"
    page_list = parse_pages(pages)
    caption_options = pop_caption_options(flags)
    captioner = None
    if not no_caption:
        captioner = open_captioner(model, backend, device, dtype, meaningless="its captions")
    bar = None
    if show_progress(progress):
        from tqdm import tqdm

        bar = tqdm(
            total=_count_pages(files, page_list), unit="page", desc="reading", file=sys.stderr
        )
    failed = 0
    for path in files:
        try:
            doc = read_document(
                path,
                captioner=captioner,
                engine=ocr,
                lang=lang,
                dpi=dpi,
                pages=page_list,
                caption_options=caption_options,
                on_page=bar.update if bar is not None else None,
            )
        except BlipcapError as exc:
            raise click.UsageError(str(exc)) from exc
        if doc.error:
            failed += 1
            warn(f"{path}: {doc.error['message']}")
        if captioner is not None and captioner.random_weights and doc.provenance is not None:
            doc.provenance["random_weights"] = True
        if fmt == "json":
            click.echo(json.dumps(doc.to_dict(), ensure_ascii=False))
        elif fmt == "markdown":
            click.echo(doc.to_markdown())
        else:
            click.echo(doc.to_text())
            if not doc.error and doc.description:
                click.echo(f"Description: {doc.description}\n")
    if bar is not None:
        bar.close()
    if failed:
        sys.exit(1)
