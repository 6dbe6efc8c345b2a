"""What needs a person: low confidence, broken captions, charts, image maps, unclear links.

Fake captioners and a fake OCR stand in for the model; each decision is asserted exactly.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
from PIL import Image

from blipcap.alttext.cache import CaptionCache
from blipcap.alttext.doubts import confidence_score, degenerate, is_chart_text
from blipcap.alttext.engine import AltTextOptions, needs_person, run_alt_text
from blipcap.alttext.judge import describe_href
from blipcap.alttext.report import summary, to_json
from blipcap.alttext.review import write_review
from blipcap.alttext.sources import BlipCaptions
from blipcap.alttext.write import edits_for
from blipcap.results import Caption

CHART_SIZE = (90, 60)  # the fake OCR reads axis numbers in images of this size


def png(path: Path, size=(48, 48), color=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def with_confidence(caption: Caption, value) -> Caption:
    """A Caption carrying ``confidence`` (a field once results.py has it, else an attribute)."""
    try:
        return dataclasses.replace(caption, confidence=value)
    except TypeError:
        object.__setattr__(caption, "confidence", value)
        return caption


class FakeCaptioner:
    """Stands in for blipcap.Captioner: returns Caption records with a confidence."""

    random_weights = False

    def __init__(self, by_name: dict[str, tuple[str, object]]):
        self.by_name = by_name
        self.calls: list[list] = []

    def caption(self, images, preset=None, progress=False, **overrides):
        self.calls.append(list(images))
        out = []
        for img in images:
            text, confidence = self.by_name[Path(img).name]
            out.append(with_confidence(Caption(str(img), text), confidence))
        return out


def blip(by_name) -> tuple[BlipCaptions, FakeCaptioner]:
    fake = FakeCaptioner(by_name)
    source = BlipCaptions()
    source._captioner, source._key = fake, "fake@1"
    return source, fake


class FakeOcr:
    name = "fake-ocr"

    def read(self, image):
        if image.size == CHART_SIZE:
            return "0 10 20 30 40 Jan Feb Mar Apr", 0.3
        return "", 0.0


def site_of(tmp_path: Path, body: str, images: dict[str, tuple[int, int]]) -> Path:
    for i, (name, size) in enumerate(images.items()):
        png(tmp_path / name, size, color=(30 * i, 90, 200 - 20 * i))
    (tmp_path / "index.html").write_text(
        f'<!DOCTYPE html><html lang="en"><body><main>\n{body}\n</main></body></html>\n',
        encoding="utf-8",
    )
    return tmp_path


def by_id(run) -> dict:
    return {f.element.attrs.get("id"): f for f in run.findings}


# --------------------------------------------------------------------------- confidence


def test_low_confidence_captions_need_a_person(tmp_path):
    site = site_of(
        tmp_path,
        '<img id="sure" src="sure.png">\n<img id="unsure" src="unsure.png">\n'
        '<img id="unknown" src="unknown.png">',
        {"sure.png": (48, 48), "unsure.png": (48, 48), "unknown.png": (48, 48)},
    )
    captions = {
        "sure.png": ("a dog running on a beach", {"score": 0.81, "mean_logprob": -0.21}),
        "unsure.png": ("a cat sitting on a chair", {"score": 0.12, "mean_logprob": -2.1}),
        "unknown.png": ("a red bicycle by a wall", None),
    }
    source, _ = blip(captions)
    run = run_alt_text([site], captions=source, cache=CaptionCache(None))
    f = by_id(run)
    assert [d.code for d in f["unsure"].doubts] == ["low-confidence"]
    assert "confidence 0.12, below 0.4" in f["unsure"].doubts[0].message
    assert f["unsure"].proposed == "A cat sitting on a chair."  # kept as a draft
    assert needs_person(f["unsure"])
    assert f["sure"].doubts == [] and not needs_person(f["sure"])
    assert f["unknown"].doubts == [] and f["unknown"].image.confidence is None
    assert f["sure"].image.confidence == pytest.approx(0.81)
    assert summary(run)["manual"] == 1

    # The threshold is an option; 0 turns the check off.
    run = run_alt_text(
        [site], AltTextOptions(min_confidence=0.1), captions=blip(captions)[0],
        cache=CaptionCache(None),
    )  # fmt: skip
    assert not any(f.doubts for f in run.findings)
    run = run_alt_text(
        [site], AltTextOptions(min_confidence=0.9), captions=blip(captions)[0],
        cache=CaptionCache(None),
    )  # fmt: skip
    assert [k for k, f in by_id(run).items() if f.doubts] == ["sure", "unsure"]


def test_confidence_survives_the_caption_cache(tmp_path):
    site = site_of(tmp_path / "s", '<img id="unsure" src="unsure.png">', {"unsure.png": (48, 48)})
    captions = {"unsure.png": ("a cat sitting on a chair", 0.2)}
    db = tmp_path / "cache.sqlite"
    with CaptionCache(db) as cache:
        run_alt_text([site], captions=blip(captions)[0], cache=cache)
    source, fake = blip(captions)
    with CaptionCache(db) as cache:
        run = run_alt_text([site], captions=source, cache=cache)
    assert fake.calls == [] and run.stats.caption_cache_hits == 1
    assert [d.code for d in run.findings[0].doubts] == ["low-confidence"]


def test_confidence_score_reads_every_shape():
    class Conf:
        score = 0.7

    assert confidence_score(None) is None
    assert confidence_score(0.25) == 0.25
    assert confidence_score({"score": 0.5}) == 0.5
    assert confidence_score({"mean_logprob": 0.0}) == 1.0
    assert confidence_score(Conf()) == 0.7
    assert confidence_score([{"score": 0.3}, {"score": 0.9}]) == 0.3  # the caption used
    assert confidence_score({"other": 1}) is None


# --------------------------------------------------------------------------- broken captions


@pytest.mark.parametrize(
    "caption, why",
    [
        ("a hat on top of a hat on top of a hat", "it repeats 'a hat on top of'"),
        ("a bald bald bald man", "it repeats 'bald'"),
        ("best best clifton best clifton neptune", "it repeats 'best clifton'"),
        ("arafed man sitting on a bench", "it holds BLIP's 'arafed' artifact"),
        ("##riding a horse", "it holds tokenizer fragments (## or [UNK])"),
        ("a [UNK] on a table", "it holds tokenizer fragments (## or [UNK])"),
        ("profound", "it is not a phrase (fewer than two words)"),
        ("[…]", "it is not a phrase (fewer than two words)"),
        ("a tree next to a tree and another tree", "it repeats 'tree' 3 times"),
    ],
)
def test_degenerate_captions_are_named(caption, why):
    assert degenerate(caption) == why


@pytest.mark.parametrize(
    "caption",
    [
        "a dog running on a beach",
        "a man and a woman sitting on a bench with a dog",
        "two dogs and two cats playing with two balls",
        "a man riding a wave on top of a surfboard",
        "a man in a suit and a woman in a dress and a child in a hat",
        "a black and white photo of a black and white cat",
        "there is a man that is standing in front of a building with a clock",
    ],
)
def test_ordinary_captions_are_not_degenerate(caption):
    assert degenerate(caption) is None


def test_a_broken_caption_needs_a_person(tmp_path):
    site = site_of(tmp_path, '<img id="loop" src="loop.png">', {"loop.png": (48, 48)})
    source, _ = blip({"loop.png": ("a hat on top of a hat on top of a hat", 0.9)})
    run = run_alt_text([site], captions=source, cache=CaptionCache(None))
    (f,) = run.findings
    assert [d.code for d in f.doubts] == ["degenerate-caption"]
    assert f.doubts[0].message == "the caption looks broken: it repeats 'a hat on top of'"
    assert needs_person(f)


# --------------------------------------------------------------------------- charts


CHART_PAGE = """<img id="ocr-chart" src="numbers.png">
<img id="named-chart" src="img/sales-chart.png">
<figure><img id="figure-chart" src="trend.png"><figcaption>Diagram of the build pipeline</figcaption></figure>
<img id="photo" src="photo.png">"""


def chart_site(tmp_path: Path) -> Path:
    return site_of(
        tmp_path,
        CHART_PAGE,
        {"numbers.png": CHART_SIZE, "img/sales-chart.png": (48, 48), "trend.png": (48, 48),
         "photo.png": (48, 48)},
    )  # fmt: skip


def test_charts_need_a_person_and_never_get_their_axis_numbers_as_alt(tmp_path):
    site = chart_site(tmp_path)
    source, fake = blip(
        {
            "numbers.png": ("a blue and white background with lines", 0.9),
            "sales-chart.png": ("a red and white striped pattern", 0.9),
            "trend.png": ("a group of boxes and arrows", 0.9),
            "photo.png": ("a dog running on a beach", 0.9),
        }
    )
    run = run_alt_text([site], captions=source, ocr=FakeOcr(), cache=CaptionCache(None))
    f = by_id(run)
    # The chart whose OCR text is a number dump is captioned instead (a draft).
    assert sorted(Path(p).name for p in fake.calls[0]) == [
        "numbers.png", "photo.png", "sales-chart.png", "trend.png",
    ]  # fmt: skip
    for key, why in [
        ("ocr-chart", "the text in the image is mostly numbers and axis labels"),
        ("named-chart", "the file name says 'chart'"),
        ("figure-chart", "the figure caption says 'diagram'"),
    ]:
        assert f[key].purpose == "complex", key
        assert f[key].doubts[0].code == "complex" and why in f[key].doubts[0].message, key
        assert needs_person(f[key])
        assert "long-description-needed" in [p.rule for p in f[key].problems]
        assert "10 20 30" not in (f[key].proposed or "")
    assert f["ocr-chart"].proposed == "A blue and white background with lines."
    assert any("0 10 20 30 40 Jan Feb Mar Apr" in n for n in f["ocr-chart"].notes)
    assert f["photo"].doubts == [] and f["photo"].purpose == "informative"


def test_a_chart_without_a_caption_gets_nothing_rather_than_its_numbers(tmp_path):
    site = chart_site(tmp_path)
    run = run_alt_text([site], ocr=FakeOcr(), cache=CaptionCache(None))  # OCR only
    f = by_id(run)["ocr-chart"]
    assert (f.purpose, f.proposed) == ("complex", None)
    assert needs_person(f)


def test_chart_text_detector():
    assert is_chart_text("0 10 20 30 40 Jan Feb Mar Apr")
    assert is_chart_text("Revenue 2021 2022 2023 $1.2M $3M 40%")
    assert is_chart_text("Q1 Q2 Q3 Q4 1,200 3.5% 40k")
    assert not is_chart_text("OPEN DAILY 9 to 5")
    assert not is_chart_text("Call 555 1234")
    assert not is_chart_text("Garden Tools Sale")


# --------------------------------------------------------------------------- image maps, links


MAP_PAGE = """<img id="map-image" src="rooms.png" usemap="#m">
<map name="m">
<area id="placeholder" href="[…]" shape="rect" coords="0,0,10,10">
<area id="contact" href="/contact.html" shape="rect" coords="10,0,20,10">
<area id="titled" href="/about/" title="About us" shape="rect" coords="20,0,30,10">
</map>
<p><a id="a1" href="#"><img id="icon-link" src="gear.png"></a></p>
<p><button type="button"><img id="icon-button" src="bell.png"></button></p>
<p><a href="/garden/"><img id="named-link" src="leaf.png"></a></p>"""


def map_site(tmp_path: Path) -> Path:
    return site_of(
        tmp_path,
        MAP_PAGE,
        {"rooms.png": (48, 48), "gear.png": (32, 32), "bell.png": (32, 32), "leaf.png": (32, 32)},
    )


MAP_CAPTIONS = {
    "rooms.png": ("a drawing of a building with rooms", 0.9),
    "gear.png": ("a black and white gear wheel", 0.9),
    "bell.png": ("a yellow bell on a white background", 0.9),
    "leaf.png": ("a green leaf", 0.9),
}


def test_image_maps_and_unnamed_controls_need_a_person(tmp_path):
    site = map_site(tmp_path)
    run = run_alt_text([site], captions=blip(MAP_CAPTIONS)[0], cache=CaptionCache(None))
    f = by_id(run)
    # An area's URL that holds no word is no name: never alt="[…]."
    assert f["placeholder"].proposed is None and needs_person(f["placeholder"])
    assert [p.rule for p in f["placeholder"].problems] == ["alt-missing"]  # no image to read
    assert f["placeholder"].reason == "an image-map area whose link target names nothing"
    assert not any("[" in (x.proposed or "") for x in run.findings)
    assert f["contact"].proposed == "Contact."  # a draft only
    assert [d.code for d in f["contact"].doubts] == ["image-map"]
    assert [d.code for d in f["map-image"].doubts] == ["image-map"]
    # The author's own title names the area: nothing to doubt.
    assert (f["titled"].proposed, f["titled"].doubts) == ("About us.", [])
    for key in ("icon-link", "icon-button"):
        assert f[key].purpose == "functional"
        assert [d.code for d in f[key].doubts] == ["unclear-function"], key
    assert (f["named-link"].proposed, f["named-link"].doubts) == ("Garden.", [])
    needing = [k for k, x in f.items() if needs_person(x)]
    assert needing == ["map-image", "placeholder", "contact", "icon-link", "icon-button"]
    s = summary(run)
    assert (s["manual"], s["drafts"], s["ready"]) == (5, 4, 2)
    assert s["needs_person_by_reason"] == {"image-map": 3, "unclear-function": 2}


def test_describe_href_needs_a_word():
    assert describe_href("[…]") is None
    assert describe_href("[...]") is None
    assert describe_href("/shop/garden-tools.html") == "Garden tools"


# --------------------------------------------------------------------------- write and review


def test_writing_leaves_out_what_needs_a_person_unless_accepted(tmp_path):
    site = map_site(tmp_path)
    run = run_alt_text([site], captions=blip(MAP_CAPTIONS)[0], cache=CaptionCache(None))
    (page,) = run.pages
    reviewed = edits_for(page.findings, unreviewed=False)
    everything = edits_for(page.findings)
    assert sorted(e.text for e in reviewed) == ["About us.", "Garden."]
    assert len(everything) == 6  # + map image, contact, icon link, icon button drafts


def test_the_review_file_lists_what_needs_a_person_first(tmp_path):
    site = map_site(tmp_path / "site")
    source, _ = blip({**MAP_CAPTIONS, "leaf.png": ("a green leaf", 0.05)})
    run = run_alt_text([site], captions=source, cache=CaptionCache(None))
    review = tmp_path / "review.csv"
    assert write_review(review, run.pages) == 7
    with review.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["line"], r["apply"], bool(r["needs_person"])) for r in rows] == [
        ("2", "no", True),  # map image
        ("4", "no", True),  # placeholder area
        ("5", "no", True),  # contact area
        ("8", "no", True),  # icon link
        ("9", "no", True),  # icon button
        ("6", "yes", False),  # titled area
        ("10", "yes", False),  # link named after its destination (the caption was not used)
    ]
    assert rows[3]["needs_person"].startswith("the page does not say where this link goes")
    assert rows[1]["needs_person"].startswith("an image-map area")
    assert rows[3]["confidence"] == "0.900" and len(rows[3]["image_sha256"]) == 64
    data = to_json(run, 150)
    icon = next(x for x in data["findings"] if x["line"] == 8)
    assert icon["needs_person"] is True and icon["doubts"] == ["unclear-function"]
    assert icon["needs_person_reason"] == rows[3]["needs_person"]
