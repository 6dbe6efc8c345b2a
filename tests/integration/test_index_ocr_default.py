"""`blipcap index --ocr auto` (the default) with real RapidOCR: photos without text skip the
recognizer, text is still found, `--ocr rapidocr` keeps full-size detection."""

from __future__ import annotations

import hashlib

import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageFont

from blipcap.cli import main
from blipcap.index import open_store
from tests.fakes import FakeCaptioner, LengthEmbedder, register

pytest.importorskip("rapidocr")
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


@pytest.fixture
def recognized(monkeypatch):
    """Counts the text lines handed to RapidOCR's recognizer."""
    from blipcap.documents import RapidOcrEngine

    lines = []
    real = RapidOcrEngine._recognize_lines

    def spy(self, crops):
        lines.extend(crops)
        return real(self, crops)

    monkeypatch.setattr(RapidOcrEngine, "_recognize_lines", spy)
    register(monkeypatch, FakeCaptioner())
    monkeypatch.setattr("blipcap.index.embeddings.get_embedder", lambda: LengthEmbedder())
    return lines


def index(tmp_path, image, *options):
    root = tmp_path / "photos"
    root.mkdir(exist_ok=True)
    image.save(root / "image.png")
    db = tmp_path / "i.db"
    result = CliRunner().invoke(main, ["index", str(root), "--db", str(db), *options])
    assert result.exit_code == 0, result.output
    with open_store(db) as store:
        return store.get_image(hashlib.sha256((root / "image.png").read_bytes()).hexdigest())


@pytest.fixture
def photo():
    """A 1600x1200 photo without legible text; full-size detection takes part of it for text."""
    from skimage import data

    return Image.fromarray(data.rocket()).resize((1600, 1200))


def test_photo_without_text_is_not_recognized_by_default(tmp_path, photo, recognized):
    record = index(tmp_path, photo)
    assert recognized == []
    assert record["ocr_text"] == "" and record["ocr_engine"] == "rapidocr"


def test_ocr_rapidocr_forces_full_detection(tmp_path, photo, recognized):
    index(tmp_path, photo, "--ocr", "rapidocr")
    assert recognized  # the full-size detector's candidate lines went to the recognizer


def test_rendered_text_is_still_found_by_default(tmp_path, photo, recognized):
    sign = photo.copy()
    ImageDraw.Draw(sign).text(
        (300, 300), "PLATFORM 9 EXIT ONLY", font=ImageFont.truetype(FONT, 40), fill="white"
    )
    record = index(tmp_path, sign)
    assert "PLATFORM 9 EXIT ONLY" in record["ocr_text"]
