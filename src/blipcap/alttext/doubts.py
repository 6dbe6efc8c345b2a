"""When a proposal must go to a person: small pure checks, no model, no I/O.

- :func:`degenerate` - a caption that is visibly broken: a decoding loop
  (repeated words or phrases), BLIP's "arafed" artifact, WordPiece fragments.
- :func:`is_chart_text` - text read in an image that is mostly numbers and
  axis labels: a chart, whose alt must never be that number dump.
- :func:`confidence_score` - the caption's confidence as one number in 0..1,
  whatever shape the captioner reports it in.
"""

from __future__ import annotations

import math
import re
from collections import Counter

# A caption below this confidence score is sent to a person. The score is the
# geometric mean of the caption's token probabilities (exp of the mean
# log-probability); below 0.4 the model was, on average, less sure of each
# word than of its alternatives together. A starting point, not a calibration:
# change it with --min-confidence.
DEFAULT_MIN_CONFIDENCE = 0.4

_FRAGMENT = re.compile(r"##|\[(?:unk|unused\d*|sep|cls|pad|mask|dec|enc)\]", re.IGNORECASE)
_ARTIFACT = re.compile(r"\bar+af+(?:e|ed|ly|y)?\b", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_LONGEST_WORD = 25  # longer "words" are glued sub-word pieces, not English
_SMALL = frozenset(
    "a an the and or of on in at to with by for is are its two three four five six".split()
)


def degenerate(caption: str) -> str | None:
    """Why ``caption`` looks broken (a short phrase), or None when it reads as a caption.

    >>> degenerate("a dog running on a beach") is None
    True
    >>> degenerate("a hat on top of a hat on top of a hat")
    "it repeats 'a hat on top of'"
    >>> degenerate("arafed man on a bench")
    "it holds BLIP's 'arafed' artifact"
    """
    if _FRAGMENT.search(caption):
        return "it holds tokenizer fragments (## or [UNK])"
    m = _ARTIFACT.search(caption)
    if m:
        return f"it holds BLIP's {m.group(0).lower()!r} artifact"
    words = [w.lower() for w in _WORD.findall(caption)]
    if len(words) < 2:
        return "it is not a phrase (fewer than two words)"
    if any(len(w) > _LONGEST_WORD for w in words):
        return "it holds a run-on non-word"
    for n in range(6, 0, -1):  # longest loop first: it names the repeated phrase best
        for i in range(len(words) - 2 * n + 1):
            gram = words[i : i + n]
            again = words[i + n : i + 2 * n] == gram
            if again and (n > 1 or words[i + 2 : i + 3] == gram):
                return f"it repeats {' '.join(gram)!r}"
    counts = Counter(w for w in words if w not in _SMALL and len(w) > 2)
    pairs = zip(words, words[1:], strict=False)
    counts.update(f"{a} {b}" for a, b in pairs if not (a in _SMALL and b in _SMALL))
    word, times = counts.most_common(1)[0] if counts else ("", 0)
    if times >= 3:
        return f"it repeats {word!r} {times} times"
    return None


_MONTHS = "jan feb mar apr may jun jul aug sep sept oct nov dec".split()
_AXIS_LABEL = re.compile(
    r"^(?:q[1-4]|h[12]|fy\d{2,4}|(?:" + "|".join(_MONTHS) + r")[a-z]*\.?|[xy]|%)$", re.IGNORECASE
)
_NUMBER = re.compile(
    r"^[-+\u2212(]?[$\u20ac\u00a3\u00a5]?\d[\d.,:/'\u2009]*(?:[%kmbx]|bn)?\)?$", re.IGNORECASE
)


def is_chart_text(text: str, *, min_tokens: int = 3, share: float = 0.5) -> bool:
    """True when ``text`` (read by OCR) is mostly numbers and axis labels: a chart's dump.

    >>> is_chart_text("0 10 20 30 40 Jan Feb Mar Sales")
    True
    >>> is_chart_text("OPEN DAILY 9 to 5")
    False
    """
    tokens = [t.strip(".,;:") for t in text.split()]
    tokens = [t for t in tokens if t]
    axis = sum(1 for t in tokens if _NUMBER.match(t) or _AXIS_LABEL.match(t))
    numbers = sum(1 for t in tokens if _NUMBER.match(t))
    return numbers >= min_tokens and axis >= share * len(tokens)


def confidence_score(value: object) -> float | None:
    """One number in 0..1 from a caption's ``confidence``, or None when there is none.

    Accepts a number, a mapping or an object with ``score`` (or ``mean_logprob``,
    turned into ``exp(mean_logprob)``), or a list of those (one per caption:
    the first, the caption that is used).
    """
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    get = value.get if isinstance(value, dict) else lambda k: getattr(value, k, None)
    score, mean = get("score"), get("mean_logprob")
    try:
        if score is not None:
            return float(score)
        if mean is not None:
            return math.exp(float(mean))
    except (TypeError, ValueError, OverflowError):
        return None
    return None
