"""Review files (CSV/JSON) round trip, and the JSON/HTML/SARIF reports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from blipcap.alttext.cache import CaptionCache
from blipcap.alttext.engine import run_alt_text
from blipcap.alttext.report import to_html, to_json, to_sarif, write_report
from blipcap.alttext.review import apply_review, write_review

# The SARIF 2.1.0 JSON schema (sarif-2.1.0-rtm.5.json as shipped in @microsoft/jest-sarif
# 1.0.0-beta.0, MIT; see tests/fixtures/README.md), vendored so that no npm install is needed.
SCHEMA = Path(__file__).parents[1] / "fixtures" / "sarif-schema-2.1.0.json"

PAGE = """<!DOCTYPE html>
<html lang="en"><head><title>t</title></head><body>
<img src="cat.png">
<img src="cat.png" alt="image of a sleeping cat">
<p><a href="/contact.html"><img src="nope.png"></a></p>
<img src="gone.png">
</body></html>
"""


class OneCaption:
    def key(self):
        return "fake@1"

    def caption(self, images, progress=False):
        return (
            [("a cat sleeping on a sofa", None) for _ in images],
            {"model": "fake", "revision": "1"},
            False,
        )


@pytest.fixture()
def site(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32), (9, 9, 9)).save(tmp_path / "cat.png")
    (tmp_path / "index.html").write_text(PAGE, encoding="utf-8")
    return tmp_path


def run(site):
    return run_alt_text([site], captions=OneCaption(), cache=CaptionCache(None))


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_review_edit_apply(site, tmp_path, suffix):
    review = tmp_path / f"review{suffix}"
    assert write_review(review, run(site).pages) == 4
    if suffix == ".csv":
        with review.open(encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.DictReader(fh))
    else:
        rows = json.loads(review.read_text())["rows"]
    assert [
        (r["line"], r["purpose"], r["current_alt"], r["proposed_alt"], r["apply"]) for r in rows
    ] == [
        # What needs a person comes first; the rest in file order.
        ("6", "unknown", "", "", "no"),
        ("3", "informative", "", "A cat sleeping on a sofa.", "yes"),
        ("4", "informative", "image of a sleeping cat", "A sleeping cat.", "yes"),
        ("5", "functional", "", "Contact.", "yes"),
    ]
    assert rows[0]["needs_person"].startswith("nothing proposed: image file not found")
    assert [r["needs_person"] for r in rows[1:]] == ["", "", ""]
    # The reviewer rewrites one, turns one down, and fills in the one nobody could propose.
    rows[1]["proposed_alt"] = "Our cat Tom asleep on the sofa."
    rows[2]["apply"] = "no"
    rows[0]["proposed_alt"], rows[0]["apply"] = "Map to our office.", "yes"
    if suffix == ".csv":
        with review.open("w", encoding="utf-8-sig", newline="") as fh:
            w = csv.DictWriter(fh, list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        review.write_text(json.dumps({"version": 1, "rows": rows}))
    result, _ = apply_review(review)
    assert result.skipped == [] and [w.edits for w in result.written] == [3]
    assert (site / "index.html").read_text() == PAGE.replace(
        '<img src="cat.png">', '<img src="cat.png" alt="Our cat Tom asleep on the sofa.">'
    ).replace('<img src="nope.png">', '<img src="nope.png" alt="Contact.">').replace(
        '<img src="gone.png">', '<img src="gone.png" alt="Map to our office.">'
    )


def test_apply_finds_elements_after_the_file_changed(site, tmp_path):
    review = tmp_path / "r.json"
    write_review(review, run(site).pages)
    page = site / "index.html"
    page.write_text(page.read_text().replace("<body>\n", "<body>\n<p>New intro.</p>\n"))
    result, _ = apply_review(review)
    # Positions moved down a line; each row is found again by its image and current alt.
    assert result.skipped == [] and [w.edits for w in result.written] == [3]
    assert 'src="nope.png" alt="Contact."' in page.read_text()


def test_json_and_html_reports(site, tmp_path):
    r = run(site)
    data = to_json(r, 150)
    assert data["wcag"]["criterion"] == "1.1.1"
    s = data["summary"]
    assert (s["elements"], s["to_fix"], s["proposed"], s["manual"]) == (4, 4, 3, 1)
    assert s["by_rule"] == {"alt-missing": 3, "alt-redundant-prefix": 1, "image-unreadable": 1}
    f = data["findings"][0]
    assert (f["line"], f["column"], f["proposed_alt"], f["machine_generated"]) == (
        3,
        1,
        "A cat sleeping on a sofa.",
        True,
    )
    page = to_html(r, 150)
    assert page.startswith('<!DOCTYPE html>\n<html lang="en">')
    assert page.count('<th scope="col">') == 7 and page.count('<th scope="row">') == 4
    with pytest.raises(Exception, match=r"\.json, \.html or \.sarif"):
        write_report(tmp_path / "r.txt", r, 150)


def test_sarif_is_valid_and_tied_to_wcag(site):
    sarif = to_sarif(run(site))
    import jsonschema

    jsonschema.validate(sarif, json.loads(SCHEMA.read_text()))
    results = sarif["runs"][0]["results"]
    assert [(r["ruleId"], r["level"]) for r in results] == [
        ("alt-missing", "error"),
        ("alt-redundant-prefix", "warning"),
        ("alt-missing", "error"),
        ("alt-missing", "error"),
        ("image-unreadable", "warning"),
    ]
    loc = results[0]["locations"][0]["physicalLocation"]
    assert loc["region"]["startLine"] == 3 and loc["region"]["startColumn"] == 1
    assert loc["artifactLocation"]["uri"].endswith("index.html")
    rules = {r["id"]: r for r in sarif["runs"][0]["tool"]["driver"]["rules"]}
    assert all(r["helpUri"].startswith("https://www.w3.org/WAI/") for r in rules.values())
    assert "non-text-content" in rules["alt-missing"]["help"]["text"]
    fix = results[0]["fixes"][0]["artifactChanges"][0]["replacements"][0]
    assert fix["insertedContent"]["text"] == ' alt="A cat sleeping on a sofa."'
    assert fix["deletedRegion"] == {
        "startLine": 3,
        "startColumn": 19,
        "endLine": 3,
        "endColumn": 19,
    }
