"""Real OCR engines on real pixels: rendered text, the scanned page scikit-image ships, and PDFs."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageFont

from blipcap.cli import main
from blipcap.documents import ocr_image, pdf_page_count, rasterize_pdf, read_document
from blipcap.errors import CorruptImageError, OptionsError

pytest.importorskip("rapidocr", reason="the ocr extra is not installed")

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
LINES = ["Invoice number 4521", "Total due: 318.40 EUR", "Thank you for your order"]


def render(lines: list[str], size: int = 36, width: int = 900) -> Image.Image:
    font = ImageFont.truetype(FONT, size)
    image = Image.new("RGB", (width, 80 + int(len(lines) * size * 1.6)), "white")
    draw = ImageDraw.Draw(image)
    for i, text in enumerate(lines):
        draw.text((40, 40 + int(i * size * 1.6)), text, font=font, fill="black")
    return image


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate: Levenshtein distance / reference length (whitespace-normalized)."""
    ref, hyp = " ".join(reference.split()), " ".join(hypothesis.split())
    prev = list(range(len(hyp) + 1))
    for i, rc in enumerate(ref, 1):
        cur = [i]
        for j, hc in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rc != hc)))
        prev = cur
    return prev[-1] / max(len(ref), 1)


def test_rapidocr_reads_rendered_lines_exactly_with_boxes():
    result = ocr_image(render(LINES))
    assert result.engine == "rapidocr"
    assert result.text == "\n".join(LINES)
    assert [ln.text for ln in result.lines] == LINES
    # Boxes in image pixels around where the text was drawn (x=40; rows 57.6 px apart).
    for i, ln in enumerate(result.lines):
        left, top, right, bottom = ln.box
        assert 30 <= left <= 50
        assert abs(top - (40 + i * 57.6)) < 20
        assert bottom - top < 57.6  # one line: the box is less than a row pitch high
        assert right > left + 300
        assert 0.5 <= ln.confidence <= 1.0


def test_an_upside_down_page_is_read_upright():
    result = ocr_image(render(LINES).rotate(180))
    assert result.rotation == 180
    assert result.text == "\n".join(LINES)


def test_long_lines_the_angle_classifier_calls_upside_down():
    # Found by benchmarks/ocr.py: the classifier called this 300 DPI line upside down (0.99).
    line = "Shipping address: 27 Harbour Road, Apartment 5C, Portsmouth PO1 3AX, United"
    result = ocr_image(render([line], size=46, width=2000))
    assert result.text == line and result.rotation == 0


def test_small_text_keeps_its_word_gaps():
    # 16 px text: recognised from an enlarged crop, so "due today" keeps its space.
    result = ocr_image(render(["Invoice number 4521 due today"], size=16, width=400))
    assert result.text == "Invoice number 4521 due today"


def test_blank_image_has_no_text():
    result = ocr_image(Image.new("RGB", (300, 200), "white"))
    assert result.text == "" and result.lines == [] and not result.has_text


REFERENCE_PAGE = """Region-based segmentation
Let us first determine markers of the coins and the
background. These markers are pixels that we can label
unambiguously as either object or background. Here,
the markers are found at the two extreme parts of the
histogram of grey values:
>>> markers = np.zeros_like(coins)"""


def test_scikit_image_scanned_page_character_error_rate():
    skimage_data = pytest.importorskip("skimage.data")
    page = Image.fromarray(skimage_data.page()).convert("RGB")
    result = ocr_image(page)
    # Measured 0.017 (see docs/documents.md); fail on a regression.
    assert cer(REFERENCE_PAGE, result.text) < 0.05
    assert "the markers are found at the two extreme parts of the" in result.text


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr is not installed")
def test_tesseract_reads_rendered_lines():
    result = ocr_image(render(LINES), "tesseract")
    assert result.engine == "tesseract"
    assert result.text == "\n".join(LINES)


def test_pdf_pages_rasterized_at_300_dpi_and_read(tmp_path):
    pdf = tmp_path / "letter.pdf"
    pages = [render(["Page one says hello"]), render(["Second page text"])]
    # An image PDF at 100 DPI: a 900 px wide page is 9 inches, 2700 px at 300 DPI.
    pages[0].save(pdf, save_all=True, append_images=pages[1:], resolution=100)
    assert pdf_page_count(pdf) == 2
    rendered = list(rasterize_pdf(pdf, dpi=300, pages=[2]))
    assert [n for n, _ in rendered] == [2]
    assert rendered[0][1].width == 2700
    doc = read_document(pdf)
    assert doc.kind == "pdf" and doc.error is None
    assert [p.ocr.text for p in doc.pages] == ["Page one says hello", "Second page text"]
    assert doc.description == (
        'Page 1: A page with the text: "Page one says hello"\nPage 2: A page with the text: "Second page text"'
    )
    with pytest.raises(OptionsError, match="page 3 does not exist"):
        list(rasterize_pdf(pdf, pages=[3]))


def test_corrupt_pdf_is_an_item_error(tmp_path):
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.7\nthis is not really a pdf")
    with pytest.raises(CorruptImageError):
        list(rasterize_pdf(bad))
    assert read_document(bad).error["type"] == "CorruptImageError"


def test_document_cli_json_without_caption(tmp_path):
    path = tmp_path / "scan.png"
    render(LINES).save(path)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    result = CliRunner().invoke(main, ["document", str(path), str(bad), "--no-caption", "--json"])
    assert result.exit_code == 1, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["text"] == "\n".join(LINES)
    assert records[0]["description"] == 'An image with the text: "' + " ".join(LINES) + '"'
    assert 30 <= records[0]["pages"][0]["lines"][0]["box"][0] <= 50  # drawn at x=40
    assert records[1]["error"]["type"] == "UnsupportedFormatError"


def test_document_cli_fuses_a_caption_from_the_model(tmp_path, tiny_checkpoint):
    path = tmp_path / "scan.png"
    render(LINES).save(path)
    result = CliRunner().invoke(
        main,
        [
            "document",
            str(path),
            "--model",
            str(tiny_checkpoint),
            "--backend",
            "torch",
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.splitlines()[-1])
    caption = record["pages"][0]["caption"]
    assert caption  # random weights: meaningless words, but a caption all the same
    assert (
        record["description"]
        == f'{caption[0].upper() + caption[1:]} that reads: "{" ".join(LINES)}"'
    )
    assert record["provenance"]["random_weights"] is True
    assert "RANDOM weights" in result.stderr


def test_document_cli_pdf_markdown_with_page_progress(tmp_path):
    pdf = tmp_path / "memo.pdf"
    pages = [render(["Memo to all staff"]), render(["Second page text"])]
    pages[0].save(pdf, save_all=True, append_images=pages[1:], resolution=100)
    result = CliRunner().invoke(
        main,
        [
            "document",
            str(pdf),
            "--no-caption",
            "--format",
            "markdown",
            "--pages",
            "2",
            "--progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "# memo.pdf\n\n## Page 2\n\n"
        '> A page with the text: "Second page text"\n\n'
        "Second page text\n\n"
    )
    assert "1/1" in result.stderr  # one page to read: the progress bar counted it
