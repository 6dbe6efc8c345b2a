"""Alt-text style rules and BLIP artifact cleanup (blipcap.text)."""

from __future__ import annotations

import pytest

from blipcap.text import clean_caption, cut_at_word, strip_lead_in, to_alt_text


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("arafed man sitting on a bench", "a man sitting on a bench"),
        ("araffe dog running in the grass", "a dog running in the grass"),
        ("arafe elephant in a field", "an elephant in a field"),
        ("there is arafed woman holding an umbrella", "there is a woman holding an umbrella"),
        ("two arafed men on a boat", "two men on a boat"),
        ("arafed people walking down a street", "people walking down a street"),
        ("a arafed cat", "a cat"),
        ("a bald bald bald man", "a bald man"),
        ("ARAFED man", "a man"),
    ],
)
def test_clean_caption_removes_known_artifacts(caption, expected):
    assert clean_caption(caption) == expected


@pytest.mark.parametrize(
    "caption",
    [
        "a cat on a sofa",
        "a   spaced  caption ",  # untouched: no artifact, so not even whitespace changes
        "a very very tall tree",  # a double word is not the decoding loop
        "giraffe and araucaria",  # words that merely look alike
        "",
    ],
)
def test_clean_caption_leaves_clean_captions_byte_identical(caption):
    assert clean_caption(caption) is caption or clean_caption(caption) == caption


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("a dog running on the beach", "A dog running on the beach."),
        ("arafed image of a dog running on the beach", "A dog running on the beach."),
        ("a picture of a red car", "A red car."),
        ("photo of two children", "Two children."),
        ("there are two cats sleeping on a red sofa", "Two cats sleeping on a red sofa."),
        ("an image showing a mountain lake", "A mountain lake."),
        ("a close - up of a flower", "A close - up of a flower."),
        ("a man ' s hat on a table , with a pen", "A man's hat on a table, with a pen."),
        ("a man and i", "A man and I."),
        ("Already a sentence!", "Already a sentence!"),
        ("   ", ""),
        ("##ing dog", "Ing dog."),
    ],
)
def test_to_alt_text_style(caption, expected):
    assert to_alt_text(caption) == expected


def test_to_alt_text_cuts_at_a_word_boundary_within_the_limit():
    caption = "a group of people standing around a table with plates of food and glasses of wine"
    for limit in (20, 30, 45, 60, 80):
        alt = to_alt_text(caption, max_chars=limit)
        assert len(alt) <= limit, (limit, alt)
        assert alt.endswith(".")
        body = alt[:-1]
        assert ("a " + caption[2:]).lower().startswith(body.lower())  # a prefix of whole words
        assert caption[len(body)] == " " if len(body) < len(caption) else True
    assert to_alt_text(caption, max_chars=30) == "A group of people standing."
    assert to_alt_text(caption, max_chars=45) == "A group of people standing around a table."


def test_to_alt_text_from_image_text_keeps_the_words():
    assert to_alt_text("SALE 50% OFF", from_image_text=True) == "SALE 50% OFF."
    assert to_alt_text("image of the week", from_image_text=True) == "Image of the week."
    assert to_alt_text("Open 9-5", 150, from_image_text=True) == "Open 9-5."


def test_to_alt_text_rejects_a_useless_limit():
    with pytest.raises(ValueError):
        to_alt_text("a cat", max_chars=1)


def test_strip_lead_in_and_cut():
    assert strip_lead_in("Image of a picture of a cat") == "a cat"
    assert strip_lead_in("Imagery of the coast") == "Imagery of the coast"
    assert cut_at_word("one two three four", 9) == "one two"
    assert cut_at_word("supercalifragilistic", 5) == "super"
