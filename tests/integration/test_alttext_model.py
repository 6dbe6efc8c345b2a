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
    pytest.importorskip("rapidocr_onnxruntime")
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
