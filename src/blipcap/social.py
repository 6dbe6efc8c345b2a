"""Social-media descriptions: alt text and post text that fit each platform.

Limits (alt text / post text) and how each platform counts:

========== ========== ========= ==================================================
platform   alt text   post text counting
========== ========== ========= ==================================================
x          1,000      280       post: X's weighted length (twitter-text 3: most
                                Latin-script characters 1, CJK and emoji 2, every
                                URL 23); alt text: graphemes
mastodon   1,500      500       graphemes; in posts every http(s) URL counts 23
bluesky    2,000      300       graphemes (URLs as written)
instagram  2,200      2,200     graphemes; at most 30 hashtags
========== ========== ========= ==================================================

Graphemes are Unicode extended grapheme clusters (UAX #29, the ``regex``
module's ``\\X``): "é" written as e + combining accent is one, a family emoji
joined by zero-width joiners is one. Mastodon servers older than 4.4.18 reject
alt text over 1,500 characters; newer ones allow 10,000 - 1,500 fits both.

The composition is pure (:func:`compose` turns a :class:`~blipcap.Caption` into
a :class:`SocialPost`); :func:`describe` adds the model call. Variants come
from sampling (``num_captions`` captions per image) and are ranked by
consensus: the variant whose content words overlap most with the other
samples ranks first (minimum-Bayes-risk selection; a sample that agrees with
the others is less likely to be a sampling accident), with a penalty for
repeated words. Hashtags are an honest heuristic, not a part-of-speech
tagger: the caption's content words after removing stopwords, verbs ending in
-ing, colours and size adjectives.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import regex

from .errors import OptionsError
from .options import CaptionOptions, resolve_options
from .records import as_record
from .results import Caption, CaptionModel, ItemError, Provenance
from .text import to_alt_text

DEFAULT_ATTRIBUTION = "Machine-generated description."
ELLIPSIS = "\u2026"


@dataclass(frozen=True)
class Platform:
    key: str
    name: str
    alt_limit: int
    post_limit: int
    url_length: int | None
    """In post text every URL counts this many (None: as written)."""
    bare_domains: bool
    """Whether bare domains such as example.com count as URLs (X links them)."""
    weighted: bool
    """X's weighted counting (CJK and emoji count 2)."""
    max_hashtags: int


PLATFORMS: dict[str, Platform] = {
    "x": Platform("x", "X", 1000, 280, 23, True, True, 30),
    "mastodon": Platform("mastodon", "Mastodon", 1500, 500, 23, False, False, 30),
    "bluesky": Platform("bluesky", "Bluesky", 2000, 300, None, False, False, 30),
    "instagram": Platform("instagram", "Instagram", 2200, 2200, None, False, False, 30),
}


def get_platform(name: str) -> Platform:
    try:
        return PLATFORMS[name.lower()]
    except KeyError:
        raise OptionsError(
            f"unknown platform {name!r}; choose one of: {', '.join(PLATFORMS)}"
        ) from None


# ---------------------------------------------------------------- counting
_GRAPHEME = regex.compile(r"\X")
# Trailing punctuation is not part of a URL (as the platforms' linkifiers do).
_URL_SCHEME = regex.compile(r"(?i)\bhttps?://[^\s<>\"']+?(?=[.,;:!?)\]]*(?:\s|$))")
_URL_WWW = regex.compile(r"(?i)\bwww\.[^\s<>\"']+?(?=[.,;:!?)\]]*(?:\s|$))")
_URL_BARE = regex.compile(
    r"(?i)(?<![\w@./-])(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+"
    r"(?:com|org|net|edu|gov|io|co|uk|de|fr|jp|app|dev|ly|me|tv|info|biz)"
    r"(?:/[^\s<>\"']*?)?(?=[.,;:!?)\]]*(?:\s|$))"
)
_EMOJI = regex.compile(r"[\p{Emoji_Presentation}\p{Regional_Indicator}\uFE0F\u20E3]")
# twitter-text 3: weight 100 (counts 1) in these code point ranges, 200 elsewhere.
_X_LIGHT_RANGES = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))
# A character outside them: a heavy one.
_X_HEAVY = regex.compile(
    "[^" + "".join(f"\\u{lo:04x}-\\u{hi:04x}" for lo, hi in _X_LIGHT_RANGES) + "]"
)


def graphemes(text: str) -> int:
    """Number of extended grapheme clusters (what people see as characters)."""
    if text.isascii():  # in ASCII only CR LF joins into one cluster
        return len(text) - text.count("\r\n")
    return len(_GRAPHEME.findall(text))


def find_urls(text: str, platform: Platform) -> list[tuple[int, int]]:
    """(start, end) spans of the URLs the platform would link, in order, not overlapping."""
    patterns = [_URL_SCHEME]
    if platform.bare_domains:
        patterns += [_URL_WWW, _URL_BARE]
    spans: list[tuple[int, int]] = []
    for pattern in patterns:
        for m in pattern.finditer(text):
            if not any(s < m.end() and m.start() < e for s, e in spans):
                spans.append(m.span())
    return sorted(spans)


def _x_weight(cluster: str) -> int:
    """twitter-text's weight of one grapheme cluster, on its scale of 100 per character."""
    if _EMOJI.search(cluster):
        return 200  # an emoji sequence counts 2 however many code points it has
    return sum(
        100 if any(lo <= ord(ch) <= hi for lo, hi in _X_LIGHT_RANGES) else 200 for ch in cluster
    )


def count(text: str, platform: Platform | str, kind: str = "post") -> int:
    """Length of ``text`` as ``platform`` counts it; ``kind`` is "post" or "alt"."""
    if isinstance(platform, str):
        platform = get_platform(platform)
    if kind == "alt":
        return graphemes(text)
    if kind != "post":
        raise ValueError(f"kind must be 'post' or 'alt', got {kind!r}")
    if platform.weighted:
        text = unicodedata.normalize("NFC", text)
    urls = find_urls(text, platform) if platform.url_length is not None else []
    pieces: list[str] = []
    pos = 0
    for start, end in urls:
        pieces.append(text[pos:start])
        pos = end
    pieces.append(text[pos:])
    url_total = len(urls) * (platform.url_length or 0)
    if not platform.weighted:
        return url_total + sum(graphemes(p) for p in pieces)
    return url_total + sum(_x_scaled(piece) for piece in pieces) // 100


def _x_scaled(text: str) -> int:
    """twitter-text's weight of ``text``: 100 a light character, 200 a heavy one or an emoji."""
    if not _EMOJI.search(text):  # no cluster to count as one: a count per code point
        return 100 * (len(text) + len(_X_HEAVY.findall(text)))
    return sum(_x_weight(c) for c in _GRAPHEME.findall(text))


# ---------------------------------------------------------------- hashtags
_STOPWORDS = frozenset(
    """a an the and or but nor so yet of in on at by for with without to from into onto
    over under above below near next beside behind between among through across along
    around about against up down out off while during before after than then there here
    this that these those it its they them their he she him her his we us our you your
    i me my is are was were be been being am has have had do does did will would can
    could should may might must shall not no some any all both each few more most other
    such own same very just only also too as if when where which who whom whose what
    how why one two three four five six seven eight nine ten several many lot lots
    front top side back middle inside outside together other another
    picture pictures image images photo photos photograph view close shot closeup
    arafed araffe there's it's""".split()
)
_ADJECTIVES = frozenset(
    """white black red blue green yellow orange purple pink brown gray grey silver gold
    golden dark light bright colorful big small large little huge tiny tall short long
    old young new empty full open closed different various couple pair group bunch
    nice beautiful pretty cute""".split()
)
# Nouns that end in -ing (the -ing rule drops verbs like "sitting").
_ING_NOUNS = frozenset(
    """building buildings painting paintings clothing ceiling ring rings king kings
    wedding weddings evening morning spring string swing swings wing wings thing
    things pudding dining parking ceiling sibling siblings icing stuffing
    lighting railing railings""".split()
)
_WORD = regex.compile(r"[\p{L}][\p{L}\p{N}]*")


def hashtags(caption: str, limit: int = 5) -> list[str]:
    """Hashtags from a caption's content words, in caption order, without duplicates."""
    tags: list[str] = []
    for word in _WORD.findall(caption.lower()):
        if len(word) < 3 or word in _STOPWORDS or word in _ADJECTIVES:
            continue
        if word.endswith("ing") and word not in _ING_NOUNS:
            continue
        tag = "#" + word
        if tag not in tags:
            tags.append(tag)
        if len(tags) >= limit:
            break
    return tags


# ---------------------------------------------------------------- composing
def truncate(text: str, limit: int, measure) -> str:
    """Cut ``text`` at a word boundary so that ``measure(result) <= limit``, ending in an ellipsis.

    Keeps as many words as fit (one word at least; a single word too long for
    the limit is cut between graphemes). ``measure`` must not shrink when text
    is appended, which holds for every platform's counter, so the longest
    fitting cut is found by bisection: O(log n) measurements of the text.
    """
    if measure(text) <= limit:
        return text
    words = text.split(" ")

    def cut(k: int) -> str:
        return " ".join(words[:k]).rstrip(" ,;:.") + ELLIPSIS

    k = _longest_fitting(len(words) - 1, lambda k: k > 0 and measure(cut(k)) <= limit)
    if k > 0:
        return cut(k)
    # One enormous "word": cut by graphemes.
    clusters = _GRAPHEME.findall(text)
    k = _longest_fitting(
        len(clusters), lambda k: measure("".join(clusters[:k]) + ELLIPSIS) <= limit
    )
    return "".join(clusters[:k]) + ELLIPSIS if limit >= 1 else ""


def _longest_fitting(n: int, fits) -> int:
    """The largest ``k`` in ``0..n`` with ``fits(k)``, or 0; ``fits`` must be true up to some k."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass(frozen=True)
class SocialOptions:
    """What to produce for each image."""

    variants: int = 1
    """K > 1 samples K captions (nucleus sampling) and ranks them."""
    hashtags: bool = False
    max_hashtags: int = 5
    attribution: str | None = None
    """A line saying the description is machine-generated (None: no line)."""
    top_p: float = 0.9
    temperature: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.variants < 1:
            raise OptionsError(f"variants must be >= 1, got {self.variants}")
        if self.max_hashtags < 0:
            raise OptionsError(f"max_hashtags must be >= 0, got {self.max_hashtags}")

    def caption_options(self, base: CaptionOptions | None = None) -> CaptionOptions:
        """The caption options: the preset as given for one variant, sampling for K."""
        if self.variants == 1:
            return base or resolve_options()
        return resolve_options(
            base,
            do_sample=True,
            num_beams=1,
            num_captions=self.variants,
            top_p=self.top_p,
            temperature=self.temperature,
            seed=self.seed,
        )


@dataclass(frozen=True)
class Variant:
    caption: str
    alt_text: str
    alt_text_length: int
    text: str
    text_length: int
    hashtags: list[str]
    score: float | None
    truncated: bool


@dataclass(frozen=True)
class SocialPost:
    """Alt text and post text for one image on one platform; ``variants[0]`` is the best."""

    path: str | None
    platform: str
    variants: list[Variant] = field(default_factory=list)
    error: ItemError | None = None
    provenance: Provenance | None = None
    random_weights: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_record(self) -> dict[str, Any]:
        """A flat JSON record: what a scheduling tool needs to post, plus where it came from."""
        p = PLATFORMS[self.platform]
        best = self.variants[0] if self.variants else None
        record: dict[str, Any] = {
            "path": self.path,
            "platform": self.platform,
            "alt_text": best.alt_text if best else None,
            "alt_text_length": best.alt_text_length if best else None,
            "alt_text_limit": p.alt_limit,
            "text": best.text if best else None,
            "text_length": best.text_length if best else None,
            "text_limit": p.post_limit,
            "hashtags": list(best.hashtags) if best else [],
            "variants": [asdict(v) for v in self.variants],
            "error": asdict(self.error) if self.error else None,
            "machine_generated": True,
            "random_weights": self.random_weights,
        }
        if self.provenance is not None:
            fields = "model revision backend dtype device options blipcap_version"
            record.update(as_record(self.provenance, fields))
        return record


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def rank(captions: Sequence[str], scores: Sequence[float] | None = None) -> list[tuple[str, float]]:
    """Distinct captions, best first, with their scores.

    With ``scores`` (e.g. the model's average log-probability per token) they
    are used as given. Without, the score is the mean Jaccard overlap of a
    caption's content words with the other captions' (consensus), times the
    share of its words that are not repeats; ties keep sampling order.
    """
    seen: dict[str, int] = {}
    for i, c in enumerate(captions):
        key = " ".join(c.lower().split())
        if key and key not in seen:
            seen[key] = i
    order = list(seen.values())
    if scores is not None:
        scored = [(captions[i], float(scores[i])) for i in order]
    else:
        bags = [_content_words(captions[i]) for i in order]
        scored = []
        for k, i in enumerate(order):
            others = [b for j, b in enumerate(bags) if j != k]
            if others:
                overlap = sum(_jaccard(bags[k], b) for b in others) / len(others)
            else:
                overlap = 1.0
            words = [w for w in _WORD.findall(captions[i].lower()) if w not in _STOPWORDS]
            distinct = len(set(words)) / len(words) if words else 0.0
            scored.append((captions[i], round(overlap * distinct, 4)))
    return sorted(scored, key=lambda t: -t[1])  # sorted() is stable: ties keep order


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def compose_text(
    caption: str, platform: Platform, options: SocialOptions
) -> tuple[str, str, list[str], bool]:
    """(alt_text, post_text, hashtags, truncated) for one caption, fitted to the limits."""
    attribution = (options.attribution or "").strip()
    # Alt-text style (no "image of" lead-in, sentence case, full stop) for both texts.
    alt_core = to_alt_text(caption, max_chars=100_000)
    alt_tail = f" {attribution}" if attribution else ""

    def alt_measure(t: str) -> int:
        return count(t, platform, "alt")

    def post_measure(t: str) -> int:
        return count(t, platform, "post")

    alt = alt_core + alt_tail
    truncated = False
    if alt_measure(alt) > platform.alt_limit:
        alt = truncate(alt_core, platform.alt_limit - alt_measure(alt_tail), alt_measure) + alt_tail
        truncated = True

    tags = (
        hashtags(caption, min(options.max_hashtags, platform.max_hashtags))
        if options.hashtags
        else []
    )

    def build(body: str, tags: list[str]) -> str:
        parts = [body]
        if tags:
            parts.append(" ".join(tags))
        if attribution:
            parts.append(attribution)
        return "\n\n".join(parts)

    body = alt_core
    post = build(body, tags)
    # Over the limit: hashtags go first (last ones first), then the description is cut.
    while post_measure(post) > platform.post_limit and tags:
        tags = tags[:-1]
        post = build(body, tags)
    if post_measure(post) > platform.post_limit:
        room = platform.post_limit - (post_measure(build("", [])) if attribution else 0)
        body = truncate(body, room, post_measure)
        post = build(body, [])
        truncated = True
    return alt, post, tags, truncated


def compose(
    result: Caption,
    platform: Platform | str,
    options: SocialOptions,
    *,
    scores: Sequence[float] | None = None,
    random_weights: bool = False,
) -> SocialPost:
    """Turn one captioning result into a SocialPost for ``platform`` (no model call)."""
    if isinstance(platform, str):
        platform = get_platform(platform)
    if not result.ok or not (result.caption or result.captions):
        error = result.error or ItemError("EmptyCaption", "the model returned an empty caption")
        return SocialPost(result.path, platform.key, [], error, result.provenance, random_weights)
    texts = list(result.captions) if len(result.captions) > 1 else [result.caption or ""]
    given = list(scores) if scores is not None else [None] * len(texts)
    pairs = [(c, s) for c, s in zip(texts, given, strict=True) if to_alt_text(c)]
    if not pairs:
        error = ItemError("EmptyCaption", "the caption is empty after clean-up")
        return SocialPost(result.path, platform.key, [], error, result.provenance, random_weights)
    if len(pairs) == 1:
        ranked: list[tuple[str, float | None]] = [pairs[0]]
    else:
        kept = [c for c, _ in pairs]
        ranked = list(rank(kept, [s for _, s in pairs] if scores is not None else None))
    variants = []
    for caption, score in ranked:
        alt, post, tags, truncated = compose_text(caption, platform, options)
        variants.append(
            Variant(
                caption=caption,
                alt_text=alt,
                alt_text_length=count(alt, platform, "alt"),
                text=post,
                text_length=count(post, platform, "post"),
                hashtags=tags,
                score=score,
                truncated=truncated,
            )
        )
    return SocialPost(result.path, platform.key, variants, None, result.provenance, random_weights)


def describe(
    captioner: CaptionModel,
    images: Iterable[Any],
    platforms: Sequence[str],
    options: SocialOptions | None = None,
    *,
    caption_options: CaptionOptions | None = None,
    progress: bool = False,
) -> list[SocialPost]:
    """Caption ``images`` once and compose a post for every platform (image-major order)."""
    options = options or SocialOptions()
    resolved = [get_platform(p) for p in platforms]
    if not resolved:
        raise OptionsError("name at least one platform (x, mastodon, bluesky, instagram)")
    results = captioner.caption(
        list(images), options=options.caption_options(caption_options), progress=progress
    )
    random_weights = bool(getattr(captioner, "random_weights", False))
    return [
        compose(result, platform, options, random_weights=random_weights)
        for result in results
        for platform in resolved
    ]
