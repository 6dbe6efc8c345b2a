"""Alt text a reviewer approved is kept by image hash and reused, on any page, in later runs."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from blipcap.alttext.approved import ApprovedAlts
from blipcap.alttext.cache import CaptionCache
from blipcap.alttext.engine import needs_person, run_alt_text
from blipcap.alttext.review import apply_review, write_review
from blipcap.errors import InputError

PAGE = """<!DOCTYPE html>
<html lang="en"><body>
<img id="chart" src="img/sales-chart.png">
<img id="photo" src="img/photo.png">
<p><a href="#"><img id="icon" src="img/gear.png"></a></p>
</body></html>
"""
# Another page: the same chart under another name, the gear linking elsewhere.
OTHER = """<!DOCTYPE html>
<html lang="en"><body>
<img id="copy" src="copies/q3.png">
<p><a href="/settings/"><img id="icon-elsewhere" src="img/gear.png"></a></p>
<p><a href="#"><img id="icon-same" src="img/gear.png"></a></p>
</body></html>
"""


class Captions:
    def __init__(self):
        self.calls: list[list[str]] = []

    def key(self):
        return "fake@1"

    def caption(self, images, progress=False):
        self.calls.append([Path(i).name for i in images])
        text = {"sales-chart.png": "a bar graph", "q3.png": "a bar graph", "photo.png":
                "a dog on a beach", "gear.png": "a gear wheel"}  # fmt: skip
        return [(text[Path(i).name], None, 0.9) for i in images], {"model": "fake"}, False


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "img").mkdir(parents=True)
    (root / "copies").mkdir()
    Image.new("RGB", (40, 40), (10, 20, 30)).save(root / "img/sales-chart.png")
    shutil.copy(root / "img/sales-chart.png", root / "copies/q3.png")
    Image.new("RGB", (40, 40), (90, 20, 30)).save(root / "img/photo.png")
    Image.new("RGB", (24, 24), (0, 0, 0)).save(root / "img/gear.png")
    (root / "index.html").write_text(PAGE, encoding="utf-8")
    return root


def by_id(run) -> dict:
    return {f.element.attrs.get("id"): f for f in run.findings}


def review_and_approve(site: Path, tmp_path: Path, store: Path) -> None:
    """Review index.html: the reviewer writes the chart's and the icon's alt and says yes."""
    run = run_alt_text([site / "index.html"], captions=Captions(), cache=CaptionCache(None))
    review = tmp_path / "review.csv"
    write_review(review, run.pages)
    with review.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if "sales-chart" in row["image"]:
            row["proposed_alt"], row["apply"] = "Sales by quarter, 2024: Q3 doubled.", "yes"
        if "gear" in row["image"]:
            row["proposed_alt"], row["apply"] = "Settings", "yes"
    with review.open("w", encoding="utf-8-sig", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    result, _ = apply_review(review, approved=ApprovedAlts(store))
    assert result.skipped == [] and result.approved == 3


def test_approved_alt_is_reused_for_the_same_image_anywhere(site, tmp_path):
    store = tmp_path / "approved.json"
    review_and_approve(site, tmp_path, store)
    data = json.loads(store.read_text())
    assert data["version"] == 1 and len(data["images"]) == 3
    assert not list(tmp_path.glob(".approved.json.*.tmp"))  # no temporary file left

    (site / "other.html").write_text(OTHER, encoding="utf-8")
    captions = Captions()
    run = run_alt_text(
        [site], captions=captions, cache=CaptionCache(None), approved=ApprovedAlts(store)
    )
    f = by_id(run)
    # The same chart bytes under another name: the reviewer's alt, no doubt, no caption needed.
    assert f["copy"].proposed == "Sales by quarter, 2024: Q3 doubled."
    assert f["copy"].reason == "approved by a reviewer for this image before"
    assert not needs_person(f["copy"])
    # A linked image's alt names its destination: reused only for the same link target.
    assert f["icon-same"].proposed == "Settings"
    assert f["icon-elsewhere"].proposed == "Settings."  # named after /settings/, not reused
    assert run.stats.approved_reused == 2  # index.html's own elements were written already
    assert captions.calls == []  # nothing left for the model


def test_reuse_in_a_later_run_of_the_same_page(site, tmp_path):
    store = tmp_path / "approved.json"
    review_and_approve(site, tmp_path, store)
    (site / "index.html").write_text(PAGE, encoding="utf-8")  # the page as it was
    captions = Captions()
    run = run_alt_text(
        [site], captions=captions, cache=CaptionCache(None), approved=ApprovedAlts(store)
    )
    f = by_id(run)
    assert f["chart"].proposed == "Sales by quarter, 2024: Q3 doubled." and f["chart"].doubts == []
    assert f["icon"].proposed == "Settings" and f["icon"].doubts == []
    assert captions.calls == []  # every image had an approved alt
    # Without the store, the same page needs a person again.
    run = run_alt_text([site], captions=Captions(), cache=CaptionCache(None))
    assert needs_person(by_id(run)["chart"]) and needs_person(by_id(run)["icon"])


def test_two_stores_saving_merge_and_keep_valid_json(tmp_path):
    path = tmp_path / "approved.json"
    a, b = ApprovedAlts(path), ApprovedAlts(path)
    a.approve("a" * 64, "A red kite.")
    b.approve("b" * 64, "A blue kite.")
    assert a.save() == 1 and b.save() == 1
    fresh = ApprovedAlts(path)
    assert fresh.lookup("a" * 64) == "A red kite." and fresh.lookup("b" * 64) == "A blue kite."
    # A later approval for the same image and role replaces the earlier one.
    fresh.approve("a" * 64, "A red kite over a hill.")
    fresh.save()
    assert ApprovedAlts(path).lookup("a" * 64) == "A red kite over a hill."
    assert len(ApprovedAlts(path)) == 2


def test_a_failed_write_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "approved.json"
    store = ApprovedAlts(path)
    store.approve("a" * 64, "A red kite.")
    store.save()
    before = path.read_bytes()
    store.approve("b" * 64, "A blue kite.")

    def boom(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.save()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".approved.json.lock", "approved.json"]


@pytest.mark.parametrize(
    "text", ["{not json", '{"version": 7, "images": {}}', '{"version": 1, "images": {"x": [{}]}}']
)
def test_a_damaged_store_is_an_error_that_says_how_to_fix_it(tmp_path, text):
    path = tmp_path / "approved.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match="fix it or move it away"):
        ApprovedAlts(path)


def test_cli_apply_keeps_approvals_in_the_working_directory(site, tmp_path, monkeypatch):
    """--apply records every applied row in ./alt-text-approved.json by default."""
    from blipcap.cli import main

    monkeypatch.chdir(tmp_path)
    run = run_alt_text([site / "index.html"], captions=Captions(), cache=CaptionCache(None))
    review = tmp_path / "review.json"
    write_review(review, run.pages)
    rows = json.loads(review.read_text())["rows"]
    chart = next(r for r in rows if "sales-chart" in r["image"])
    assert chart["apply"] == "no" and chart["needs_person"].startswith("a chart or diagram")
    chart["proposed_alt"], chart["apply"] = "Sales by quarter.", "yes"
    review.write_text(json.dumps({"version": 1, "rows": rows}))
    done = CliRunner().invoke(main, ["alt-text", "--apply", str(review)])
    assert done.exit_code == 0, done.output
    assert "approved alts kept in alt-text-approved.json" in done.stderr
    stored = json.loads((tmp_path / "alt-text-approved.json").read_text())
    alts = sorted(e["alt"] for v in stored["images"].values() for e in v)
    assert alts == ["A dog on a beach.", "Sales by quarter."]  # the photo's row said yes too
    assert 'alt="Sales by quarter."' in (site / "index.html").read_text()


def test_cli_usage_errors_for_accept_unreviewed(site):
    from blipcap.cli import main

    r = CliRunner().invoke(main, ["alt-text", str(site), "--check", "--accept-unreviewed"])
    assert r.exit_code == 2 and "--accept-unreviewed goes with --write" in r.output


def test_cli_names_a_damaged_store_and_check_does_not_need_it(site, tmp_path, monkeypatch):
    from blipcap.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "alt-text-approved.json").write_text("{oops", encoding="utf-8")
    review = tmp_path / "review.json"
    write_review(review, run_alt_text([site], captions=Captions(), cache=CaptionCache(None)).pages)
    r = CliRunner().invoke(main, ["alt-text", "--apply", str(review)])
    assert r.exit_code == 2 and "alt-text-approved.json is not valid JSON" in r.stderr
    assert (tmp_path / "alt-text-approved.json").read_text() == "{oops"  # never overwritten
    assert CliRunner().invoke(main, ["alt-text", str(site), "--check"]).exit_code == 1
