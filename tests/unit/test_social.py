"""Social-media descriptions: counting, hashtags, ranking, fitting, records."""

from __future__ import annotations

import pytest

from blipcap.errors import OptionsError
from blipcap.options import CaptionOptions
from blipcap.results import Caption, ItemError, Provenance
from blipcap.social import (
    DEFAULT_ATTRIBUTION,
    PLATFORMS,
    SocialOptions,
    compose,
    compose_text,
    count,
    describe,
    get_platform,
    graphemes,
    hashtags,
    rank,
    truncate,
)
from tests.fakes import FakeCaptioner

X, MASTODON, BLUESKY, INSTAGRAM = (PLATFORMS[k] for k in ("x", "mastodon", "bluesky", "instagram"))


def test_limits_are_the_published_ones():
    assert {k: (p.alt_limit, p.post_limit) for k, p in PLATFORMS.items()} == {
        "x": (1000, 280),
        "mastodon": (1500, 500),
        "bluesky": (2000, 300),
        "instagram": (2200, 2200),
    }


def test_unknown_platform_names_the_choices():
    with pytest.raises(OptionsError, match="choose one of: x, mastodon, bluesky, instagram"):
        get_platform("myspace")


@pytest.mark.parametrize(
    "text, n",
    [
        ("", 0),
        ("cafe\u0301", 4),  # e + combining acute: one grapheme
        ("\U0001f468\u200d\U0001f469\u200d\U0001f467", 1),  # family ZWJ sequence
        ("\U0001f1eb\U0001f1f7", 1),  # flag: two regional indicators
        ("\U0001f44d\U0001f3fd", 1),  # thumbs up + skin tone
        ("\u0928\u092e\u0938\u094d\u0924\u0947", 3),  # Devanagari "namaste": conjuncts cluster
        ("\r\n", 1),
    ],
)
def test_graphemes(text, n):
    assert graphemes(text) == n


@pytest.mark.parametrize(
    "text, expected",
    [
        ("hello world", 11),
        ("hello https://example.com/a/very/long/path?with=query world", 6 + 23 + 6),
        ("see https://a.io.", 4 + 23 + 1),  # the full stop is not part of the URL
        ("go to example.com now", 6 + 23 + 4),  # X links bare domains
        ("www.example.org", 23),
        ("\u65e5\u672c\u8a9e", 6),  # CJK counts 2 each
        ("\U0001f468\u200d\U0001f469\u200d\U0001f467", 2),  # one emoji sequence: 2
        ("\u00e9", 1),
        ("cafe\u0301", 4),  # NFC first: e + accent becomes one code point
        ("\u2014", 1),  # em dash is in a weight-1 range
        ("\u2603", 2),  # snowman: outside the light ranges
    ],
)
def test_x_weighted_post_length(text, expected):
    assert count(text, X, "post") == expected


def test_mastodon_counts_scheme_urls_as_23_but_not_bare_domains():
    assert count("a https://example.com/" + "x" * 100 + " b", MASTODON) == 2 + 23 + 2
    assert count("example.com", MASTODON) == 11


def test_bluesky_and_instagram_count_graphemes_as_written():
    text = "https://example.com/" + "x" * 50 + " \U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert count(text, BLUESKY) == 20 + 50 + 2
    assert count(text, INSTAGRAM) == 72


def test_alt_text_counts_graphemes_everywhere():
    text = "\u65e5\u672c https://example.com"
    for platform in PLATFORMS.values():
        assert count(text, platform, "alt") == 22


def test_hashtags_are_content_words_in_order():
    assert hashtags("a dog sitting on a couch next to a white cat in a building") == [
        "#dog",
        "#couch",
        "#cat",
        "#building",
    ]
    assert hashtags("a man riding a wave on top of a surfboard", limit=2) == ["#man", "#wave"]
    assert hashtags("two dogs and two dogs") == ["#dogs"]
    assert hashtags("a picture of it") == []


def test_rank_prefers_consensus_and_drops_duplicates():
    ranked = rank(
        [
            "a dog on a couch",
            "a cat cat cat",
            "a dog lying on a couch",
            "A dog on a couch",
        ]
    )
    assert [c for c, _ in ranked] == ["a dog on a couch", "a dog lying on a couch", "a cat cat cat"]
    assert ranked[-1][1] == 0.0


def test_rank_uses_given_scores():
    assert rank(["a", "b", "c"], scores=[-2.0, -0.5, -1.0]) == [
        ("b", -0.5),
        ("c", -1.0),
        ("a", -2.0),
    ]


def _truncate_word_by_word(text, limit, measure):
    """The straightforward definition: drop the last word until the text fits."""
    if measure(text) <= limit:
        return text
    words = text.split(" ")
    while len(words) > 1:
        words.pop()
        candidate = " ".join(words).rstrip(" ,;:.") + "\u2026"
        if measure(candidate) <= limit:
            return candidate
    return None  # the grapheme cut


@pytest.mark.parametrize("limit", [3, 10, 40, 100, 280, 1000])
def test_truncate_keeps_as_many_words_as_the_straightforward_cut(limit):
    import random

    rng = random.Random(limit)
    vocab = [
        "a",
        "dog,",
        "on",
        "the",
        "couch.",
        "with",
        "\u00e9t\u00e9",
        "\U0001f436",
        "https://x.org/a",
    ]
    for _ in range(50):
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 120)))
        for measure in (len, lambda t: count(t, X, "post")):
            want = _truncate_word_by_word(text, limit, measure)
            got = truncate(text, limit, measure)
            assert measure(got) <= limit
            if want is not None:
                assert got == want


def test_truncate_measures_a_long_caption_a_logarithmic_number_of_times():
    calls = []

    def measure(text):
        calls.append(text)
        return count(text, X, "post")

    text = " ".join(f"word{i}" for i in range(5000))
    out = truncate(text, 280, measure)
    assert count(out, X, "post") <= 280 and out.endswith("\u2026")
    assert len(calls) <= 20  # not one per dropped word (thousands)


@pytest.mark.parametrize(
    "text", ["a\r\nb\n\rc", "plain ascii", "caf\u00e9 e\u0301", "\U0001f468\u200d\U0001f469 ok"]
)
def test_counting_shortcuts_agree_with_the_cluster_count(text):
    import unicodedata

    import regex

    from blipcap.social import _x_weight

    assert graphemes(text) == len(regex.findall(r"\X", text))
    clusters = regex.findall(r"\X", unicodedata.normalize("NFC", text))  # X counts NFC text
    assert count(text, X, "post") == sum(_x_weight(c) for c in clusters) // 100


def test_truncate_cuts_at_a_word_and_adds_an_ellipsis():
    assert truncate("A dog on a couch with a cat.", 15, len) == "A dog on a\u2026"
    assert truncate("short", 15, len) == "short"
    assert truncate("abcdefghij", 5, len) == "abcd\u2026"


def test_compose_text_plain():
    alt, post, tags, truncated = compose_text("a dog on a couch", X, SocialOptions())
    assert alt == "A dog on a couch."
    assert post == "A dog on a couch."
    assert (tags, truncated) == ([], False)


def test_compose_text_with_hashtags_and_attribution():
    options = SocialOptions(hashtags=True, attribution=DEFAULT_ATTRIBUTION)
    alt, post, tags, truncated = compose_text("arafed image of a dog on a couch", MASTODON, options)
    assert alt == "A dog on a couch. Machine-generated description."
    assert post == "A dog on a couch.\n\n#dog #couch\n\nMachine-generated description."
    assert tags == ["#dog", "#couch"]
    assert not truncated


def test_hashtags_are_dropped_before_the_description_is_cut():
    filler = " ".join(f"w{i}" for i in range(60))  # 230 characters of distinct short words
    caption = "a dog and a cat and a horse and a cow " + filler + " big barn"
    options = SocialOptions(hashtags=True)
    _, post, tags, truncated = compose_text(caption, X, options)
    assert count(post, X) <= 280
    assert not truncated
    assert len(tags) < 5  # some hashtags had to go, the description stayed whole
    assert post.startswith("A dog and a cat")


def test_long_text_is_cut_to_fit_every_limit():
    caption = " ".join(f"word{i}" for i in range(500))  # 3889 characters
    options = SocialOptions(attribution="Described by a machine.")
    for platform in PLATFORMS.values():
        alt, post, _, truncated = compose_text(caption, platform, options)
        assert truncated
        assert count(alt, platform, "alt") <= platform.alt_limit
        assert count(post, platform, "post") <= platform.post_limit
        assert alt.endswith("\u2026 Described by a machine.")
        assert post.endswith("\u2026\n\nDescribed by a machine.")


PROV = Provenance(
    model="m",
    revision="r",
    backend="torch",
    dtype="float32",
    device="cpu",
    options={},
    blipcap_version="0.1.0",
)


def test_compose_record_for_scheduling_tools():
    result = Caption(
        path="cat.jpg", caption="a cat on a sofa", captions=["a cat on a sofa"], provenance=PROV
    )
    record = compose(result, "bluesky", SocialOptions(hashtags=True)).to_record()
    assert record == {
        "path": "cat.jpg",
        "platform": "bluesky",
        "alt_text": "A cat on a sofa.",
        "alt_text_length": 16,
        "alt_text_limit": 2000,
        "text": "A cat on a sofa.\n\n#cat #sofa",
        "text_length": 28,
        "text_limit": 300,
        "hashtags": ["#cat", "#sofa"],
        "variants": [
            {
                "caption": "a cat on a sofa",
                "alt_text": "A cat on a sofa.",
                "alt_text_length": 16,
                "text": "A cat on a sofa.\n\n#cat #sofa",
                "text_length": 28,
                "hashtags": ["#cat", "#sofa"],
                "score": None,
                "truncated": False,
            }
        ],
        "error": None,
        "machine_generated": True,
        "random_weights": False,
        "model": "m",
        "revision": "r",
        "backend": "torch",
        "dtype": "float32",
        "device": "cpu",
        "options": {},
        "blipcap_version": "0.1.0",
    }


def test_compose_ranks_sampled_variants():
    result = Caption(
        path=None,
        caption="a cat on a sofa",
        captions=["a cat on a sofa", "a toaster", "a cat sleeping on a sofa"],
    )
    post = compose(result, "x", SocialOptions(variants=3))
    assert [v.caption for v in post.variants] == [
        "a cat on a sofa",
        "a cat sleeping on a sofa",
        "a toaster",
    ]
    assert post.to_record()["alt_text"] == "A cat on a sofa."


def test_compose_keeps_item_errors():
    result = Caption(
        path="bad.png", caption=None, error=ItemError("CorruptImageError", "bad.png: truncated")
    )
    record = compose(result, "x", SocialOptions()).to_record()
    assert record["error"] == {"type": "CorruptImageError", "message": "bad.png: truncated"}
    assert record["alt_text"] is None and record["variants"] == []


def test_social_options_map_to_sampling():
    assert SocialOptions().caption_options() == CaptionOptions()
    opts = SocialOptions(variants=4, seed=7).caption_options()
    assert (opts.do_sample, opts.num_captions, opts.top_p, opts.seed) == (True, 4, 0.9, 7)
    with pytest.raises(OptionsError, match="variants must be >= 1"):
        SocialOptions(variants=0)


def test_describe_captions_once_for_all_platforms():
    cap = FakeCaptioner(lambda i: f"a dog number {i}", random_weights=True)
    posts = describe(cap, ["a", "b"], ["x", "mastodon"], SocialOptions(hashtags=True))
    assert len(cap.calls) == 1
    assert [(p.path, p.platform) for p in posts] == [
        ("a", "x"),
        ("a", "mastodon"),
        ("b", "x"),
        ("b", "mastodon"),
    ]
    assert posts[0].variants[0].text == "A dog number a.\n\n#dog #number"
    assert all(p.random_weights for p in posts)
