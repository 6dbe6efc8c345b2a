"""Reading order, text joining, Tesseract TSV parsing and caption fusion (no OCR model needed)."""

from __future__ import annotations

import click
import pytest

from blipcap.cli.document import parse_pages
from blipcap.documents import (
    OcrLine,
    OcrResult,
    fuse_description,
    lines_to_text,
    parse_tesseract_tsv,
    reading_order,
)


def line(text: str, left: int, top: int, right: int, bottom: int) -> OcrLine:
    return OcrLine(text, (left, top, right, bottom), 0.9)


def test_fuse_description_joins_caption_and_text():
    assert (
        fuse_description("a letter on a desk", "Dear Ann,\nthank you.")
        == 'A letter on a desk that reads: "Dear Ann, thank you."'
    )


def test_fuse_description_without_caption_or_text():
    assert fuse_description(None, "STOP") == 'An image with the text: "STOP"'
    assert (
        fuse_description(None, "STOP", subject="A page with the text")
        == 'A page with the text: "STOP"'
    )
    assert fuse_description("a red sign.", "") == "A red sign."
    assert fuse_description(None, "  ") == ""


def test_fuse_description_shortens_text_at_a_word():
    text = "one two three four five six"
    assert (
        fuse_description("a note", text, max_text_chars=13) == 'A note that reads: "one two three…"'
    )
    assert (
        fuse_description("a note", "abcdefghijkl", max_text_chars=5)
        == 'A note that reads: "abcde…"'
    )


def test_reading_order_heading_then_left_column_then_right():
    lines = [
        line("right one", 320, 100, 600, 130),
        line("Title across the page", 20, 10, 600, 50),
        line("left two", 20, 140, 280, 170),
        line("right two", 320, 140, 600, 170),
        line("left one", 20, 100, 280, 130),
    ]
    ordered = [ln.text for ln in reading_order(lines)]
    assert ordered == ["Title across the page", "left one", "left two", "right one", "right two"]


def test_reading_order_words_on_one_row_left_to_right_and_slanted_lines():
    lines = [
        line("4521", 300, 12, 360, 40),
        line("Invoice", 20, 10, 120, 40),
        line("number", 140, 11, 280, 41),
        # a slanted scan: boxes of neighbouring lines overlap by a few pixels
        line("second line", 20, 36, 360, 66),
    ]
    assert [ln.text for ln in reading_order(lines)] == ["Invoice", "number", "4521", "second line"]


def test_lines_to_text_rows_and_paragraphs():
    lines = [
        line("Invoice", 20, 10, 120, 40),
        line("number", 140, 10, 280, 40),
        line("line two", 20, 45, 300, 75),
        line("after a gap", 20, 140, 300, 170),
    ]
    assert lines_to_text(lines) == "Invoice number\nline two\n\nafter a gap"


def test_parse_tesseract_tsv_groups_words_into_lines():
    tsv = "\n".join(
        [
            "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext",
            "1\t1\t0\t0\t0\t0\t0\t0\t800\t600\t-1\t",
            "5\t1\t1\t1\t1\t1\t10\t20\t50\t15\t96.5\tHello",
            "5\t1\t1\t1\t1\t2\t70\t21\t60\t16\t90.5\tworld",
            "5\t1\t1\t1\t2\t1\t10\t40\t40\t15\t80\tagain",
            "5\t1\t1\t1\t2\t2\t60\t40\t40\t15\t70\t ",
        ]
    )
    lines = parse_tesseract_tsv(tsv)
    assert lines == [
        OcrLine("Hello world", (10, 20, 130, 37), pytest.approx(0.935)),
        OcrLine("again", (10, 40, 50, 55), pytest.approx(0.80)),
    ]


def test_ocr_result_to_dict():
    result = OcrResult("Hi", [line("Hi", 1, 2, 3, 4)], "rapidocr", 10, 20)
    assert result.has_text
    assert result.to_dict() == {
        "text": "Hi",
        "engine": "rapidocr",
        "width": 10,
        "height": 20,
        "rotation": 0,
        "lines": [{"text": "Hi", "box": [1, 2, 3, 4], "confidence": 0.9}],
    }


def test_parse_pages():
    assert parse_pages(None) is None
    assert parse_pages("1-3,5,2") == [1, 2, 3, 5]
    for bad in ("0", "3-1", "a", "1-"):
        with pytest.raises(click.BadParameter):
            parse_pages(bad)


def test_document_markdown_and_text():
    from blipcap.documents import Document, DocumentPage

    ocr = OcrResult("Total: *42* [EUR]\nsecond line\n\n# not a heading", [], "rapidocr", 10, 10)
    page = DocumentPage(
        1, 10, 10, ocr, caption="a receipt", description='A receipt that reads: "..."'
    )
    doc = Document("scans/r.png", "image", [page])
    assert doc.to_markdown() == (
        "# r.png\n\n"
        '> A receipt that reads: "..."\n\n'
        "Total: \\*42\\* \\[EUR\\]\nsecond line\n\n"
        "\\# not a heading\n"
    )
    assert doc.to_text() == (
        "== scans/r.png ==\nCaption: a receipt\nTotal: *42* [EUR]\nsecond line\n\n# not a heading"
    )
    failed = Document("x.pdf", "pdf", error={"type": "InputError", "message": "encrypted"})
    assert failed.to_markdown() == "# x.pdf\n\n**Error** (InputError): encrypted\n"
    assert failed.to_text() == "x.pdf: error: encrypted"


def test_document_help_has_examples():
    from click.testing import CliRunner

    from blipcap.cli import main

    result = CliRunner().invoke(main, ["document", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "blipcap document letter.pdf" in result.output
    assert "--ocr [rapidocr|tesseract]" in result.output


def test_a_short_line_boxed_over_much_of_the_image_is_dropped(monkeypatch):
    """A detector's false find in a photo ("8" over the whole frame) is not text; a page
    number or a short word in a line-sized box is."""
    from PIL import Image

    from blipcap.documents import OcrLine, ocr

    class Engine:
        name = "tesseract"

        def recognize(self, image):
            return [
                OcrLine("8", (0, 0, 1000, 800), 0.9),  # the whole frame
                OcrLine("12", (10, 10, 40, 30), 0.9),  # a page number
                OcrLine("A long line of text", (0, 100, 900, 500), 0.9),
            ], 0

    monkeypatch.setattr(ocr, "get_ocr_engine", lambda engine, lang: Engine())
    result = ocr.ocr_image(Image.new("RGB", (1000, 800)), "tesseract")
    assert [ln.text for ln in result.lines] == ["12", "A long line of text"]
