"""`blipcap index` / `search` end to end with the real captioner (tiny random-weight checkpoint),
the real embedder and real OCR."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageFont

from blipcap.cli import main
from blipcap.index import open_store, xmp

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    (root / "2024").mkdir(parents=True)
    Image.new("RGB", (80, 60), (200, 30, 30)).save(root / "red.jpg")
    Image.new("RGB", (80, 60), (30, 30, 200)).save(root / "2024" / "blue.png")
    sign = Image.new("RGB", (640, 160), "white")
    ImageDraw.Draw(sign).text(
        (30, 50), "Parking permit 2024", font=ImageFont.truetype(FONT, 40), fill="black"
    )
    sign.save(root / "2024" / "permit.png")
    return root


def test_index_search_with_the_tiny_model(tmp_path, photos, tiny_checkpoint):
    pytest.importorskip("rapidocr")
    db = tmp_path / "index.db"
    model = ["--model", str(tiny_checkpoint), "--backend", "torch", "--device", "cpu"]
    runner = CliRunner()
    result = runner.invoke(
        main, ["index", str(photos), "--db", str(db), "--json", "--write-xmp", *model]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary == dict(
        scanned=3,
        added=3,
        updated=0,
        unchanged=0,
        removed=0,
        failed=0,
        captioned=3,
        xmp_written=3,
        db=str(db),
    )
    assert "RANDOM weights" in result.stderr
    with open_store(db) as store:
        permit = store.get_image(
            store.paths_under([str(photos / "2024" / "permit.png")])[
                str(photos / "2024" / "permit.png")
            ].sha256
        )
    assert (
        permit["ocr_text"] == "Parking permit 2024"
        and permit["has_text"]
        and permit["ocr_engine"] == "rapidocr"
    )
    assert permit["provenance"]["random_weights"] is True
    assert permit["provenance"]["model"].endswith("tiny-s0-st")
    sidecar = xmp.read_sidecar(photos / "red.jpg")
    assert sidecar.machine_generated and sidecar.description == sidecar.caption

    # Text in the image is found by its words; the caption is labelled as meaningless.
    result = runner.invoke(main, ["search", "parking permit", "--db", str(db), "--limit", "1"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"1. {photos / '2024' / 'permit.png'}  (score ")
    assert lines[1].startswith("   caption [random-weight test model, meaningless]: ")
    assert lines[2] == "   [Parking] [permit] 2024"
    result = runner.invoke(
        main, ["search", "permit", "--db", str(db), "--json", "--no-text", "--mode", "text"]
    )
    assert result.stdout == ""
    result = runner.invoke(
        main, ["search", "permit", "--db", str(db), "--json", "--folder", str(photos / "2024")]
    )
    hit = json.loads(result.stdout.splitlines()[0])
    assert hit["path"] == str(photos / "2024" / "permit.png") and hit["random_weights"] is True

    # A second run captions nothing.
    result = runner.invoke(main, ["index", str(photos), "--db", str(db), "--json", *model])
    assert json.loads(result.stdout.splitlines()[-1])["captioned"] == 0
