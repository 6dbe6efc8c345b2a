"""Purpose decisions: every branch of the W3C alt decision tree on hand-written pages.

A fake captioner and a fake OCR stand in for the model (the real ones run in
tests/integration); they return fixed text, so each decision is asserted exactly.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from blipcap.alttext.cache import CaptionCache
from blipcap.alttext.engine import AltTextOptions, run_alt_text

CAPTIONS = {
    "photo.png": "arafed dog running on a beach",
    "tools.png": "a rake and a shovel",
    "button.png": "a magnifying glass",
    "chart.png": "a bar chart with blue bars",
    "figure.png": "a red bicycle leaning on a wall",
    "lazy.png": "a bowl of soup",
}
TEXT_SIZE = (120, 40)  # images of this size "contain text" for the fake OCR


class FakeCaptions:
    def __init__(self):
        self.calls: list[list] = []

    def key(self) -> str:
        return "fake-model@1"

    def caption(self, images, progress=False):
        self.calls.append(list(images))
        out = []
        for img in images:
            if isinstance(img, bytes):
                out.append((CAPTIONS["photo.png"], None))
            else:
                out.append((CAPTIONS.get(Path(img).name, "a thing"), None))
        return out, {"model": "fake-model", "revision": "1"}, False


class FakeOcr:
    name = "fake-ocr"

    def __init__(self, text="OPEN DAILY"):
        self.text = text
        self.read_count = 0

    def read(self, image):
        self.read_count += 1
        if image.size == TEXT_SIZE:
            return self.text, 0.6
        return "", 0.0


def png(path: Path, size=(64, 64), color=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Decision tree</title></head><body><main>
<img id="presentation" src="img/photo.png" role="presentation">
<img id="hidden" src="img/photo.png" aria-hidden="true">
<img id="spacer-attrs" src="img/photo.png" width="1" height="1">
<img id="spacer-name" src="img/spacer.gif">
<img id="pixel" src="img/pixel.png">
<p><a href="/about.html"><img id="link-with-text" src="img/photo.png"> About us</a></p>
<p><a href="/shop/" title="Visit the shop"><img id="link-title" src="img/tools.png"></a></p>
<p><a href="/shop/garden-tools.html"><img id="link-href" src="img/tools.png"></a></p>
<p><a href="/"><img id="logo" src="img/logo.png"></a></p>
<p><button type="button"><img id="button" src="img/button.png"></button></p>
<form action="/search"><input id="input" type="image" src="img/button.png"></form>
<img src="img/photo.png" usemap="#m" alt="Site map">
<map name="m"><area id="area" href="/contact.html" shape="rect" coords="0,0,10,10"></map>
<img id="text" src="img/sign.png">
<p>We are OPEN DAILY from nine. <img id="text-repeated" src="img/sign.png"></p>
<figure><img id="figure" src="img/figure.png"><figcaption>My red bicycle leaning against the garden wall.</figcaption></figure>
<img id="informative" src="img/photo.png">
<img id="complex" src="img/chart.png">
<img id="good" src="img/photo.png" alt="Rex, our dog, on the beach.">
<img id="bad" src="img/photo.png" alt="IMG_1234">
<img id="prefix" src="img/photo.png" alt="Image of Rex on the beach">
<p><a href="/contact.html"><img id="repeats-link" src="img/photo.png" alt="Contact us"> Contact us</a></p>
<img id="missing" src="img/nope.png">
<img id="remote" src="https://example.com/a.png">
<div id="role-img" role="img"></div>
<img id="data" src="data:image/png;base64,{data}">
<img id="lazy" src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="img/lazy.png">
<img id="root" src="/img/photo.png">
<img id="broken" src="img/broken.png">
</main></body></html>
"""


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    img = tmp_path / "img"
    # Distinct colours: identical bytes would (rightly) be captioned once under one name.
    for i, name in enumerate(
        ("photo.png", "tools.png", "button.png", "chart.png", "figure.png", "lazy.png")
    ):
        png(img / name, color=(40 * i, 10, 10))
    png(img / "logo.png", TEXT_SIZE, color=(0, 0, 90))
    png(img / "sign.png", TEXT_SIZE, color=(0, 90, 0))
    png(img / "pixel.png", (1, 1))
    Image.new("P", (1, 1)).save(img / "spacer.gif")
    (img / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, "PNG")
    page = PAGE.replace("{data}", base64.b64encode(buf.getvalue()).decode())
    (tmp_path / "index.html").write_text(page, encoding="utf-8")
    return tmp_path


def decide(site: Path, **kw):
    captions = FakeCaptions()
    ocr = FakeOcr()
    run = run_alt_text(
        [site], AltTextOptions(**kw), captions=captions, ocr=ocr, cache=CaptionCache(None)
    )
    by_id = {f.element.attrs.get("id"): f for f in run.findings}
    return run, by_id, captions, ocr


EXPECTED = {
    # id: (status, purpose, proposed)
    "presentation": ("ok", "decorative", None),  # role=presentation already hides it
    "hidden": ("ok", "decorative", None),
    "spacer-attrs": ("fix", "decorative", ""),
    "spacer-name": ("fix", "decorative", ""),
    "pixel": ("fix", "decorative", ""),
    "link-with-text": ("fix", "decorative", ""),
    "link-title": ("fix", "functional", "Visit the shop."),
    "link-href": ("fix", "functional", "Garden tools."),
    "logo": ("fix", "functional", "OPEN DAILY home page."),
    "button": ("fix", "functional", "A magnifying glass."),
    "input": ("fix", "functional", "Search."),
    "area": ("fix", "functional", "Contact."),
    "text": ("fix", "text", "OPEN DAILY."),
    "text-repeated": ("fix", "decorative", ""),
    "figure": ("fix", "decorative", ""),
    "informative": ("fix", "informative", "A dog running on a beach."),
    "complex": ("fix", "complex", "A bar chart with blue bars."),
    "good": ("ok", "informative", None),
    "bad": ("fix", "informative", "A dog running on a beach."),
    "prefix": ("fix", "informative", "Rex on the beach."),
    "repeats-link": ("fix", "decorative", ""),
    "missing": ("manual", "unknown", None),
    "remote": ("manual", "unknown", None),
    "role-img": ("manual", "unknown", None),
    "data": ("fix", "informative", "A dog running on a beach."),
    "lazy": ("fix", "informative", "A bowl of soup."),
    "root": ("fix", "informative", "A dog running on a beach."),
    "broken": ("manual", "unknown", None),
}


def test_every_branch_of_the_decision_tree(site):
    run, by_id, captions, _ = decide(site)
    got = {k: (by_id[k].status, by_id[k].purpose, by_id[k].proposed) for k in EXPECTED}
    assert got == EXPECTED
    # Everything the model saw went in one call, each distinct image once.
    assert len(captions.calls) == 1
    names = sorted(Path(x).name if isinstance(x, str) else "<bytes>" for x in captions.calls[0])
    assert names == ["<bytes>", "button.png", "chart.png", "figure.png", "lazy.png", "photo.png"]


def test_reasons_problems_and_notes(site):
    run, by_id, _, _ = decide(site)
    assert [p.rule for p in by_id["bad"].problems] == ["alt-camera-name"]
    assert by_id["presentation"].problems == []
    assert [p.rule for p in by_id["repeats-link"].problems] == ["alt-repeats-text"]
    assert [p.rule for p in by_id["complex"].problems] == ["alt-missing", "long-description-needed"]
    assert by_id["missing"].problems[-1].rule == "image-unreadable"
    assert "image file not found" in by_id["missing"].image.error
    assert "--fetch-remote" in by_id["remote"].image.error
    assert "could not" in by_id["broken"].reason
    assert by_id["text"].reason == "the text in the image (OCR)"
    assert by_id["link-href"].reason == "named after the destination"


def test_root_relative_needs_a_base_dir_when_a_file_is_given(site):
    run = run_alt_text(
        [site / "index.html"], captions=FakeCaptions(), ocr=FakeOcr(), cache=CaptionCache(None)
    )
    root = next(f for f in run.findings if f.element.attrs.get("id") == "root")
    assert root.status == "manual"
    assert "--base-dir" in root.image.error
    run = run_alt_text(
        [site / "index.html"], AltTextOptions(base_dir=site), captions=FakeCaptions(), ocr=FakeOcr(),
        cache=CaptionCache(None),
    )  # fmt: skip
    root = next(f for f in run.findings if f.element.attrs.get("id") == "root")
    assert root.proposed == "A dog running on a beach."


def test_check_mode_reads_no_image(site):
    run = run_alt_text([site])  # no captioner, no OCR: markup only
    by_id = {f.element.attrs.get("id"): f for f in run.findings}
    assert run.stats.images_read == 0
    assert by_id["informative"].status == "fix" and by_id["informative"].proposed is None
    assert by_id["link-title"].proposed == "Visit the shop."  # decided from markup alone
    assert by_id["good"].status == "ok"


def test_cache_means_a_rerun_captions_nothing(site, tmp_path):
    db = tmp_path / "cache.sqlite"
    first = FakeCaptions()
    ocr = FakeOcr()
    with CaptionCache(db) as cache:
        run1 = run_alt_text([site], captions=first, ocr=ocr, cache=cache)
    assert run1.stats.captioned == 6 and len(first.calls) == 1
    reads = ocr.read_count
    second = FakeCaptions()
    with CaptionCache(db) as cache:
        run2 = run_alt_text([site], captions=second, ocr=ocr, cache=cache)
    assert second.calls == []  # nothing re-captioned
    assert ocr.read_count == reads  # nor re-read
    assert run2.stats.caption_cache_hits == 6
    assert [f.proposed for f in run1.findings] == [f.proposed for f in run2.findings]


def test_max_chars_applies_to_proposals(site):
    _, by_id, _, _ = decide(site, max_chars=20)
    assert by_id["informative"].proposed == "A dog running."
