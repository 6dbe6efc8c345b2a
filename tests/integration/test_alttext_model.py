"""alt-text with the real pieces: a tiny random-weight BLIP, RapidOCR, the CLI, a killed write.

Captions from random weights are gibberish, so these tests assert structure
and that the alt-text rules were applied, never the words.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageFont

from blipcap.alttext.cache import CaptionCache
from blipcap.alttext.engine import run_alt_text
from blipcap.alttext.rules import alt_problems
from blipcap.alttext.sources import OcrReader
from blipcap.cli import main

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Shop</title></head><body><main>
<h1>Shop</h1>
<img src="img/red.png">
<img src="img/blue.png" alt="DSC0001">
<p><a href="/garden/"><img src="img/green.png"></a></p>
<img src="img/red.png" alt="">
</main></body></html>
"""


def make_site(root: Path) -> Path:
    (root / "img").mkdir(parents=True)
    Image.new("RGB", (64, 64), (220, 20, 20)).save(root / "img/red.png")
    Image.new("RGB", (64, 64), (20, 20, 220)).save(root / "img/blue.png")
    Image.new("RGB", (64, 64), (20, 220, 20)).save(root / "img/green.png")
    (root / "index.html").write_text(PAGE, encoding="utf-8")
    return root


def cli(*args: str):
    return CliRunner().invoke(main, ["alt-text", *args], catch_exceptions=False)


def test_check_write_check_with_a_tiny_model(tiny_checkpoint, tmp_path):
    site = make_site(tmp_path / "site")
    cache = str(tmp_path / "cache.sqlite")
    model = ["--model", str(tiny_checkpoint), "--backend", "torch", "--device", "cpu"]
    first = cli(str(site), "--check")
    assert first.exit_code == 1
    assert first.stdout.splitlines() == [
        f"{os.path.relpath(site / 'index.html')}:4:1: alt-missing: image has no text alternative",
        f"{os.path.relpath(site / 'index.html')}:5:1: alt-camera-name: alt text 'DSC0001' is a camera or screenshot file name",
        f"{os.path.relpath(site / 'index.html')}:6:23: alt-missing: image has no text alternative",
    ]
    diff = cli(str(site), *model, "--cache", cache, "--no-ocr")
    assert diff.exit_code == 0, diff.output
    assert "random weights" in diff.stderr
    # Random-weight captions are gibberish, and look it: both need a person, so the diff
    # holds only the link named after its destination.
    assert (
        diff.stdout.count("\n+<") == 1
        and '+<p><a href="/garden/"><img src="img/green.png" alt="Garden."></a></p>' in diff.stdout
    )
    assert "1 changes ready, 2 need a person (2 drafts held back)" in diff.stderr
    assert "the caption looks broken" in diff.stderr
    assert "2 images captioned, 0 from cache" in diff.stderr
    assert (site / "index.html").read_text() == PAGE  # a diff only: nothing written

    wrote = cli(
        str(site),
        *model,
        "--cache",
        cache,
        "--no-ocr",
        "--write",
        "--accept-unreviewed",
        "--report",
        str(tmp_path / "r.json"),
    )
    assert wrote.exit_code == 0, wrote.output
    assert "0 images captioned, 2 from cache" in wrote.stderr  # the re-run re-captions nothing
    after = (site / "index.html").read_text()
    assert cli(str(site), "--check").exit_code == 0  # the linter is now satisfied
    import json

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["random_weights"] is True
    assert report["model"]["model"] == str(tiny_checkpoint)
    for f in report["findings"]:
        if f["proposed_alt"]:
            alt = f["proposed_alt"]
            assert not alt[0].islower() and alt[0] != "#" and alt.endswith(".") and len(alt) <= 150
            assert "arafed" not in alt.lower() and not alt.lower().startswith(
                ("image of", "a picture of")
            )
            assert f'alt="{alt}"' in after
    # Changed lines are exactly the three image lines.
    changed = [
        i
        for i, (a, b) in enumerate(zip(PAGE.splitlines(), after.splitlines(), strict=True))
        if a != b
    ]
    assert changed == [3, 4, 5]


def text_image(path: Path, text: str) -> None:
    image = Image.new("RGB", (420, 120), "white")
    draw = ImageDraw.Draw(image)
    draw.text((20, 30), text, fill="black", font=ImageFont.load_default(size=52))
    image.save(path)


@pytest.mark.slow
def test_images_of_text_get_their_text_with_real_ocr(tmp_path):
    pytest.importorskip("rapidocr")
    text_image(tmp_path / "sign.png", "OPEN DAILY")
    Image.new("RGB", (120, 120), (30, 120, 200)).save(tmp_path / "plain.png")
    (tmp_path / "p.html").write_text(
        '<img src="sign.png"><p>Hours: <img src="sign.png"> OPEN DAILY</p><img src="plain.png">',
        encoding="utf-8",
    )
    run = run_alt_text([tmp_path], ocr=OcrReader(), cache=CaptionCache(tmp_path / "c.sqlite"))
    sign, repeated, plain = run.findings
    assert (sign.purpose, sign.proposed) == ("text", "OPEN DAILY.")
    assert (repeated.purpose, repeated.proposed) == ("decorative", "")
    assert plain.image.ocr_text is None and plain.proposed is None  # no text: it needs a caption
    assert alt_problems(sign.element, 150) == []
    assert run.stats.ocr_read == 2


def test_a_kill_during_write_leaves_the_original_intact(tmp_path):
    page = tmp_path / "page.html"
    original = '<p>caf\xe9</p>\r\n<img src="a.png" alt="Image of a cat on a mat">\r\n'.encode(
        "latin-1"
    )
    page.write_bytes(original)
    env = dict(os.environ, BLIPCAP_TEST_PAUSE_BEFORE_REPLACE="60")
    code = "from blipcap.cli import main; main()"
    args = [sys.executable, "-c", code, "alt-text", str(page), "--write", "--no-ocr", "--no-cache"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".page.html.*.blipcap.tmp")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the temporary file never appeared"
            time.sleep(0.05)
        tmp = next(tmp_path.glob(".page.html.*.blipcap.tmp"))
        while tmp.stat().st_size == 0:  # written and fsynced before the pause
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert page.read_bytes() == original
    assert tmp.read_bytes() == original.replace(b"Image of a cat on a mat", b"A cat on a mat.")
    # The same command, left alone, writes the new file (and only the alt bytes change).
    env.pop("BLIPCAP_TEST_PAUSE_BEFORE_REPLACE")
    done = subprocess.run(args, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert page.read_bytes() == original.replace(b"Image of a cat on a mat", b"A cat on a mat.")


def chart_image(path: Path) -> None:
    """A bar chart whose only text is its axis: numbers and years."""
    image = Image.new("RGB", (480, 320), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=26)
    draw.line([(70, 20), (70, 260), (460, 260)], fill="black", width=3)
    for i, value in enumerate(["0", "10", "20", "30", "40"]):
        draw.text((15, 246 - i * 55), value, fill="black", font=font)
    for i, (year, height) in enumerate([("2021", 90), ("2022", 160), ("2023", 210)]):
        x = 110 + i * 120
        draw.rectangle([x, 260 - height, x + 70, 260], fill=(40, 90, 200))
        draw.text((x, 270), year, fill="black", font=font)
    image.save(path)


REPORT_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Report</title></head><body><main>
<h1>Annual report</h1>
<img src="img/figure1.png">
<img src="img/office.png" usemap="#floor">
<map name="floor"><area href="[…]" shape="rect" coords="0,0,32,32"><area href="/kitchen.html" shape="rect" coords="32,0,64,32"></map>
<p><a href="#top"><img src="img/up.png"></a></p>
</main></body></html>
"""


@pytest.mark.slow
def test_a_chart_an_image_map_and_a_linked_icon_go_to_a_person(tiny_checkpoint, tmp_path):
    """The issue's site, with the real tiny model and real OCR: nothing in doubt is written."""
    pytest.importorskip("rapidocr")
    site = tmp_path / "site"
    (site / "img").mkdir(parents=True)
    chart_image(site / "img/figure1.png")
    Image.new("RGB", (64, 64), (200, 180, 20)).save(site / "img/office.png")
    Image.new("RGB", (24, 24), (10, 10, 10)).save(site / "img/up.png")
    page = site / "index.html"
    page.write_text(REPORT_PAGE, encoding="utf-8")
    model = ["--model", str(tiny_checkpoint), "--backend", "torch", "--device", "cpu"]
    cache = ["--cache", str(tmp_path / "cache.sqlite")]
    report = tmp_path / "r.json"

    diff = cli(str(site), *model, *cache, "--report", str(report))
    assert diff.exit_code == 0, diff.output
    assert diff.stdout == ""  # everything here needs a person: no change is ready
    assert "0 changes ready, 5 need a person" in diff.stderr
    import json

    findings = json.loads(report.read_text())["findings"]
    chart, office, placeholder, kitchen, icon = findings
    assert chart["purpose"] == "complex" and chart["doubts"][0] == "complex"
    assert "mostly numbers and axis labels" in chart["needs_person_reason"]
    assert "2021" not in (chart["proposed_alt"] or "")  # never the axis dump
    assert any("40 30 20 10 0 2021 2022 2023" in n for n in chart["notes"])
    assert "image-map" in office["doubts"] and "image-map" in kitchen["doubts"]
    assert placeholder["proposed_alt"] is None  # href="[…]" names nothing
    assert kitchen["proposed_alt"] == "Kitchen."
    assert "unclear-function" in icon["doubts"]
    assert all(f["needs_person"] for f in findings)

    held = cli(str(site), *model, *cache, "--write")
    assert held.exit_code == 0, held.output
    assert page.read_text() == REPORT_PAGE
    assert "wrote 0 alt text changes in 0 files" in held.stderr

    accepted = cli(str(site), *model, *cache, "--write", "--accept-unreviewed")
    assert accepted.exit_code == 0, accepted.output
    after = page.read_text()
    assert '<area href="[…]" shape="rect" coords="0,0,32,32">' in after  # still for a person
    assert 'alt="Kitchen."' in after and "2021" not in after.split("<img", 1)[1].split(">")[0]
