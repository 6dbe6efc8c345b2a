"""Text rules for captions: BLIP artifact cleanup and alt-text style.

``clean_caption`` is what the ``default`` preset applies to every caption: it
only touches captions that contain a known BLIP artifact and returns all
others unchanged, character for character.

``to_alt_text`` turns a caption (or text read from an image) into alt text
that follows common guidance (W3C WAI images tutorial, WebAIM): no "image
of ..." lead-in (screen readers already announce an image), sentence case, a
closing full stop (so speech pauses), and a length limit met by cutting at a
word boundary. The default limit is 150 characters because JAWS and NVDA
split alt text into chunks of about that size.
"""

from __future__ import annotations

import re

# "arafed" and its spellings: BLIP-large's most common artifact, a mangled
# article ("a") glued to a sub-word. It shows up as "arafed man", "araffe dog",
# "there is arafed woman", "two arafed men".
_ARTIFACT = re.compile(r"\b(?:ar+af+(?:e|ed|ly|y)?|ar+af+ed)\b", re.IGNORECASE)
ARTIFACT = _ARTIFACT  # the degeneration guard (guard.py) detects the same spellings
# The same word three or more times in a row ("bald bald bald"): a decoding loop.
_REPEAT = re.compile(r"\b(\w+)(?:\s+\1\b){2,}", re.IGNORECASE)
_DETERMINERS = frozenset(
    "a an the this that these those some two three four five six seven eight nine ten "
    "many several few his her their its my our your one".split()
)
_SPACE = re.compile(r"\s+")


def clean_caption(text: str) -> str:
    """Remove known BLIP artifacts; captions without one come back unchanged.

    >>> clean_caption("arafed man sitting on a bench")
    'a man sitting on a bench'
    >>> clean_caption("two arafed men on a boat")
    'two men on a boat'
    >>> clean_caption("a bald bald bald man")
    'a bald man'
    >>> clean_caption("a cat on a sofa")
    'a cat on a sofa'
    """
    if not _ARTIFACT.search(text) and not _REPEAT.search(text):
        return text
    text = _REPEAT.sub(r"\1", text)
    words = text.split()
    out: list[str] = []
    for i, word in enumerate(words):
        if not _ARTIFACT.fullmatch(word):
            out.append(word)
            continue
        previous = out[-1].lower() if out else ""
        following = words[i + 1] if i + 1 < len(words) else ""
        # The artifact stands for "a": keep an article unless one is already
        # there, or the noun that follows is plural ("arafed men" -> "men").
        if previous in _DETERMINERS or not following or _looks_plural(following):
            continue
        if _ARTIFACT.fullmatch(following):
            continue
        out.append("an" if following[:1].lower() in "aeiou" else "a")
    return " ".join(out)


def _looks_plural(word: str) -> bool:
    w = word.lower()
    irregular = {"men", "women", "people", "children", "mice", "geese", "teeth", "feet"}
    return w in irregular or (len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")))


# Lead-ins that a screen reader makes redundant, and BLIP's "there is a ...".
LEAD_IN = re.compile(
    r"^\s*(?:(?:this|the|an?)\s+)?(?:close[- ]up\s+)?"
    r"(?:image|picture|photo|photograph|pic|graphic|illustration|screenshot|snapshot|drawing|"
    r"rendering|painting)s?\s+(?:of|showing|shows|depicting|depicts|with)\s+",
    re.IGNORECASE,
)
_THERE_IS = re.compile(r"^\s*there\s+(?:is|are)\s+(?=\S)", re.IGNORECASE)
# Punctuation spacing left by WordPiece decoding: "man ' s hat", "red , white".
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?%)])")
_APOSTROPHE = re.compile(r"(\w)\s*'\s*(s|t|re|ve|ll|d|m)\b", re.IGNORECASE)
# Words a cut should not end on: the sentence would dangle.
_DANGLING = frozenset(
    "a an the and or but of with in on at to for from by as is are was were its their his her "
    "this that these those into onto over under near next".split()
)


def strip_lead_in(text: str) -> str:
    """Drop "image of", "a photo of", "there is" and similar from the start of ``text``."""
    previous = None
    while previous != text:
        previous = text
        text = LEAD_IN.sub("", text, count=1)
        text = _THERE_IS.sub("", text, count=1)
    return text


def to_alt_text(caption: str, max_chars: int = 150, *, from_image_text: bool = False) -> str:
    """Format ``caption`` as alt text within ``max_chars`` characters.

    With ``from_image_text=True`` (text read from the image by OCR) the words
    are kept as written: no lead-in removal, no artifact cleanup, no case
    change beyond a capital first letter.

    >>> to_alt_text("arafed image of a dog running on the beach")
    'A dog running on the beach.'
    >>> to_alt_text("there are two cats sleeping on a red sofa", max_chars=24)
    'Two cats sleeping.'
    """
    if max_chars < 2:
        raise ValueError(f"max_chars must be at least 2, got {max_chars}")
    text = _SPACE.sub(" ", caption).strip()
    if not from_image_text:
        text = clean_caption(text)
        text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
        text = _APOSTROPHE.sub(r"\1'\2", text)
        text = re.sub(r"\bi\b", "I", text)
        # The article a lead-in leaves behind stays ("image of a dog" -> "a dog").
        text = strip_lead_in(text)
    if not from_image_text:
        # A WordPiece continuation ("##ing") cannot start a caption; nor can stray punctuation.
        text = re.sub(r"^[#\s,;:.\-]+", "", text)
    text = text.strip(" ,;:-")
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    if len(text) + (0 if text[-1] in ".!?" else 1) > max_chars:
        text = _cut(text, max_chars - 1)
    if text[-1] not in ".!?":
        text += "."
    return text


def _cut(text: str, limit: int) -> str:
    """The longest prefix of whole words within ``limit`` characters, not ending on a filler word."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    words = head.split()
    if not text[limit].isspace() and not head[-1].isspace():
        words = words[:-1]  # the last word runs past the limit
    if not words:
        return text[:limit].rstrip()
    while len(words) > 1 and words[-1].lower().strip(",;:") in _DANGLING:
        words.pop()
    return " ".join(words).rstrip(",;:-")


def cut_at_word(text: str, limit: int) -> str:
    """Public form of the word-boundary cut (used for over-long existing alt text)."""
    return _cut(_SPACE.sub(" ", text).strip(), limit)
