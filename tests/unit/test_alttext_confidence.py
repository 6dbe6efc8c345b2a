"""The alt-text review file names the decoder's confidence in each caption it proposes from."""

from __future__ import annotations

import csv

from test_alttext_review_report import PAGE

from blipcap.alttext.cache import CaptionCache
from blipcap.alttext.engine import run_alt_text
from blipcap.alttext.review import FIELDS, write_review


class SureCaptions:
    """A caption source that gives (caption, error, confidence) triples, as BlipCaptions does."""

    calls = 0

    def key(self):
        return "fake@1"

    def caption(self, images, progress=False):
        SureCaptions.calls += 1
        return [("a cat sleeping on a sofa", None, 0.73219) for _ in images], {"model": "f"}, False


def rows(site, cache, tmp_path):
    run = run_alt_text([site], captions=SureCaptions(), cache=cache)
    review = tmp_path / "review.csv"
    write_review(review, run.pages)
    with review.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh)), run


def test_review_rows_carry_the_caption_confidence_also_from_the_cache(tmp_path):
    from PIL import Image

    site = tmp_path / "site"
    site.mkdir()
    Image.new("RGB", (32, 32), (9, 9, 9)).save(site / "cat.png")
    (site / "index.html").write_text(PAGE, encoding="utf-8")
    assert FIELDS.index("caption_confidence") == FIELDS.index("reason") + 1
    cache = CaptionCache(tmp_path / "cache.db")
    first, run = rows(site, cache, tmp_path)
    by_line = {r["line"]: r for r in first}
    assert by_line["3"]["proposed_alt"] == "A cat sleeping on a sofa."
    assert by_line["3"]["caption_confidence"] == "0.732"
    assert by_line["5"]["caption_confidence"] == ""  # a link's label, not a caption
    assert "confidence" not in (run.provenance or {})
    again, _ = rows(site, cache, tmp_path)  # captions now come from the cache
    assert SureCaptions.calls == 1
    assert [r["caption_confidence"] for r in again] == [r["caption_confidence"] for r in first]
