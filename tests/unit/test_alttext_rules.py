"""Bad-alt detection on alt text found in the wild, and good alt text left alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from blipcap.alttext.model import Element
from blipcap.alttext.rules import alt_problems, covered_by, repeats


def element(alt: str, src: str = "photos/beach-day.jpg") -> Element:
    return Element(
        file=Path("x.html"), kind="img", line=1, column=1, offset=0, snippet="", alt=alt,
        span=None, src=src, sources=[src],
    )  # fmt: skip


BAD = [
    # file names and paths (axe-core #3685)
    ("beach-day.jpg", "alt-filename"),
    ("hero_banner_v2.png", "alt-filename"),
    ("/images/uploads/2021/05/team.jpeg", "alt-filename"),
    ("https://cdn.example.com/img/logo.svg", "alt-filename"),
    ("C:\\Users\\me\\Desktop\\photo.JPG", "alt-filename"),
    ("images/team", "alt-filename"),
    ("beach-day", "alt-filename"),  # the image's own file name, extension dropped
    ("header-logo-white", "alt-filename"),  # a slug
    ("logo@2x.png", "alt-filename"),
    # camera and screenshot names
    ("IMG_1234", "alt-camera-name"),
    ("IMG_20230514_101112", "alt-camera-name"),
    ("DSC0001", "alt-camera-name"),
    ("DSC_0042", "alt-camera-name"),
    ("DSCN1234", "alt-camera-name"),
    ("P1010001", "alt-camera-name"),
    ("PXL_20231224_183015123", "alt-camera-name"),
    ("GOPR0042", "alt-camera-name"),
    ("Screenshot 2023-05-14 at 10.11.12", "alt-camera-name"),
    ("Screen Shot 2020-01-02 at 3.04.05 PM", "alt-camera-name"),
    ("image001", "alt-camera-name"),
    ("WhatsApp Image 2023-01-01 at 10.00.00", "alt-camera-name"),
    # placeholders
    ("TODO", "alt-placeholder"),
    ("alt", "alt-placeholder"),
    ("Alt text", "alt-placeholder"),
    ("untitled", "alt-placeholder"),
    ("Untitled design (3)", "alt-placeholder"),
    ("placeholder", "alt-placeholder"),
    ("Insert alt text here", "alt-placeholder"),
    ("null", "alt-placeholder"),
    ("undefined", "alt-placeholder"),
    ("Lorem ipsum dolor sit amet", "alt-placeholder"),
    ("-", "alt-placeholder"),
    ("...", "alt-placeholder"),
    # generic words
    ("image", "alt-generic"),
    ("Photo", "alt-generic"),
    ("picture", "alt-generic"),
    ("graphic", "alt-generic"),
    ("spacer", "alt-generic"),
    ("an image", "alt-generic"),
    ("Image 3", "alt-generic"),
    ("logo", "alt-generic"),
    ("icon", "alt-generic"),
    ("banner", "alt-generic"),
    # lead-ins and length
    ("Image of a dog catching a frisbee", "alt-redundant-prefix"),
    ("picture of our team at the summit", "alt-redundant-prefix"),
    ("A photo of the new library entrance", "alt-redundant-prefix"),
    ("word " * 40, "alt-too-long"),
    # white space only
    ("   ", "alt-whitespace"),
]


@pytest.mark.parametrize("alt, rule", BAD)
def test_bad_alt_is_caught(alt, rule):
    problems = alt_problems(element(alt), max_chars=150)
    assert [p.rule for p in problems] == [rule], problems


GOOD = [
    "A dog catching a frisbee in a park.",
    "Sales rose 20% in 2023.",
    "Jane Doe, head of research",
    "ACME home page",
    "Map of the city centre with the museum marked",  # names a map; not "image of"
    "Imagery team at work",
    "Photography exhibition poster: Light and Shadow, 1-30 June",
    "Search",
    "Next page",
    "PDF",
    "3",
    "X",  # a short letter, e.g. a close button labelled X, is not a placeholder here
]


@pytest.mark.parametrize("alt", GOOD)
def test_good_alt_is_left_alone(alt):
    assert alt_problems(element(alt), max_chars=150) == []


def test_empty_alt_is_not_judged_by_these_rules():
    assert alt_problems(element(""), 150) == []


def test_the_length_limit_is_configurable():
    alt = "A long but good description of a mountain lake at dawn with mist."
    assert alt_problems(element(alt), 150) == []
    assert [p.rule for p in alt_problems(element(alt), 40)] == ["alt-too-long"]


def test_repeats_and_coverage():
    assert repeats("Contact us", ["Contact us"])
    assert repeats("our new office", ["Visit our new office in Leeds"])
    assert not repeats("Dog", ["My dog Rex"])  # a single word inside a sentence is not a repeat
    assert covered_by("a dog running on a beach", ["Our dog Rex running on the beach at Brighton"])
    assert not covered_by("a cat on a sofa", ["Our dog Rex running on the beach"])
    assert not covered_by("a dog", ["dog"])  # one content word is too little to decide on


@pytest.mark.parametrize(("alt", "src"), [("W3C", "w3c.svg"), ("GitHub", "img/github.png")])
def test_a_proper_name_that_is_also_the_stem_is_a_fine_logo_alt(alt, src):
    assert alt_problems(element(alt, src), 150) == []


@pytest.mark.parametrize(
    ("alt", "src"), [("beach_day", "beach_day.jpg"), ("Logo2024", "Logo2024.png")]
)
def test_file_name_like_stems_are_still_flagged(alt, src):
    assert [p.rule for p in alt_problems(element(alt, src), 150)] == ["alt-filename"]


def test_template_syntax_is_not_page_text():
    caption = "{% include_cached figure.html %} Sales by quarter {{ page.footnote }}"
    assert not repeats("include cached figure html sales by quarter page footnote", [caption])
    assert repeats("Sales by quarter", [caption])


def test_an_svg_labelled_by_a_templated_figcaption_is_not_flagged():
    from blipcap.alttext.judge import judge_markup
    from blipcap.alttext.scan_html import scan_html

    html = (
        '<figure><svg role="img" aria-labelledby="c"><title>Chart</title></svg>'
        '<figcaption id="c">Sales by quarter {% include_cached note.html %}</figcaption></figure>'
    )
    (e,) = scan_html(html, Path("x.html"))
    assert "alt-repeats-text" not in [p.rule for p in judge_markup(e).problems]
