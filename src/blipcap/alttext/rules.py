"""Rules for bad existing alt text, and the WCAG references every finding links to.

Each rule id is also a SARIF rule id. The lists come from the alt text that
checkers and audits keep finding in the wild: file names and paths (axe-core
#3685), camera file names, placeholders left by CMSs and templates, vague
single words, "image of ..." lead-ins, and alt that repeats nearby text.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from ..text import LEAD_IN
from .model import Element, Problem

UNDERSTANDING = "https://www.w3.org/WAI/WCAG22/Understanding/non-text-content.html"
TUTORIAL = "https://www.w3.org/WAI/tutorials/images/"
DECISION_TREE = "https://www.w3.org/WAI/tutorials/images/decision-tree/"

# rule id -> (short name, full description, help URL, default SARIF level)
RULES: dict[str, tuple[str, str, str, str]] = {
    "alt-missing": (
        "Image has no text alternative",
        "An image, image button, image-map area or role=img element has no text alternative "
        "(WCAG 1.1.1; failure F65).",
        "https://www.w3.org/WAI/WCAG22/Techniques/failures/F65",
        "error",
    ),
    "alt-empty-functional": (
        "Functional image has empty alt",
        "The image is the only content of a link or button (or an image button or map area), "
        "so its alt must name the destination or action (WCAG 1.1.1 and 2.4.4; failure F89).",
        "https://www.w3.org/WAI/WCAG22/Techniques/failures/F89",
        "error",
    ),
    "alt-filename": (
        "Alt text is a file name or path",
        "The alt text is a file name, path or slug, which says nothing about the image (WCAG 1.1.1; failure F30).",
        "https://www.w3.org/WAI/WCAG22/Techniques/failures/F30",
        "error",
    ),
    "alt-camera-name": (
        "Alt text is a camera file name",
        "The alt text is a camera or screenshot file name such as IMG_1234 (WCAG 1.1.1; failure F30).",
        "https://www.w3.org/WAI/WCAG22/Techniques/failures/F30",
        "error",
    ),
    "alt-placeholder": (
        "Alt text is a placeholder",
        'The alt text is placeholder text such as "TODO", "alt" or "untitled" (WCAG 1.1.1; failure F30).',
        "https://www.w3.org/WAI/WCAG22/Techniques/failures/F30",
        "error",
    ),
    "alt-generic": (
        "Alt text is a generic word",
        'The alt text is a generic word such as "image", "photo" or "graphic" (WCAG 1.1.1; failure F30).',
        "https://www.w3.org/WAI/WCAG22/Techniques/failures/F30",
        "error",
    ),
    "alt-whitespace": (
        "Alt text is only white space",
        'The alt attribute holds only spaces; use alt="" for a decorative image or describe it (WCAG 1.1.1).',
        UNDERSTANDING,
        "warning",
    ),
    "alt-redundant-prefix": (
        'Alt text starts with "image of"',
        'Screen readers already announce an image; "image of", "picture of" and similar add noise (WCAG 1.1.1).',
        TUTORIAL,
        "warning",
    ),
    "alt-repeats-text": (
        "Alt text repeats the text next to it",
        "The alt text repeats adjacent text, link text or the figure caption, so screen readers "
        'read it twice; the image is decorative here and should have alt="" (WCAG 1.1.1; technique H2).',
        "https://www.w3.org/WAI/WCAG22/Techniques/html/H2",
        "warning",
    ),
    "alt-too-long": (
        "Alt text is too long",
        "The alt text is longer than the limit; screen readers split long alt text and users cannot "
        "navigate within it. Keep alt short and give a long description on the page (WCAG 1.1.1; G92).",
        "https://www.w3.org/WAI/WCAG22/Techniques/general/G92",
        "warning",
    ),
    "long-description-needed": (
        "Complex image needs a long description",
        "Charts, diagrams and images holding much text need a short alt plus a long description "
        "on the page or linked from it (WCAG 1.1.1; techniques G92, G74, G73).",
        "https://www.w3.org/WAI/tutorials/images/complex/",
        "note",
    ),
    "image-unreadable": (
        "Image could not be read",
        "The image file is missing, remote (not fetched) or could not be decoded, so no alt text "
        "could be proposed from it.",
        TUTORIAL,
        "warning",
    ),
}

_PLACEHOLDER_WORDS = frozenset(
    [
        "todo", "tbd", "tba", "fixme", "alt", "alttext", "alt text", "alt tag", "image alt text",
        "alt description", "add alt text", "insert alt text", "enter alt text", "alt text here",
        "alternative text", "untitled", "untitled image", "placeholder", "placeholder image",
        "description", "image description", "caption", "null", "none", "undefined", "nan", "n a",
        "default", "empty", "blank", "test", "test image", "asdf", "dummy", "sample", "temp",
        "unnamed", "no alt", "no description", "missing", "lorem ipsum", "xxx",
    ]
)  # fmt: skip
_PLACEHOLDER_RE = re.compile(
    r"^(?:todo|tbd|fixme|xxx+|lorem ipsum.*|alt(?:ernative)?[ -]?text.*|placeholder.*|untitled(?: \w+)?(?: \d+)?|"
    r"insert .*alt.*|enter .*alt.*|add .*alt.*|image description|description|caption|null|none|undefined|"
    r"nan|n/?a|default|empty|blank|test(?: image)?|asdf|dummy|sample(?: image)?|temp|tmp|unnamed|"
    r"no alt|no description|missing|[-_.*?!/\\|#]+)$",
    re.IGNORECASE,
)
_GENERIC_RE = re.compile(
    r"^(?:(?:an?|the|my|our)\s+)?(?:image|img|photo|photograph|picture|pic|graphic|graphics|spacer|"
    r"icon|logo|banner|screenshot|screen shot|thumbnail|thumb|figure|fig|illustration|drawing|"
    r"diagram|chart|graph|clipart|clip art|artwork|visual|media|hero|hero image|header image|"
    r"featured image|background|bg|photo image|stock photo|gif|jpeg|jpg|png)s?(?:\s*#?\d+)?$",
    re.IGNORECASE,
)
_CAMERA_RE = re.compile(
    r"^(?:img|dsc[nf_]?|dscf|p\d{3}|pxl|gopr|gh\d{2}|dji|mvimg|wp|vid|pano|sam|cimg|imag|photo|"
    r"image|snapshot|screenshot|screen ?shot|capture|pict?|hpim|mvc|sdc|dcp|kif|fb_img|whatsapp image)"
    r"[ _-]*\d{3}[\d _.\-:at]*(?:\s*(?:am|pm))?(?:\s*\(\d+\))?(?:\.\w{3,4})?$",
    re.IGNORECASE,
)
_IMAGE_EXT = r"(?:png|jpe?g|gif|webp|svg|bmp|tiff?|avif|heic|heif|ico|jfif)"
_FILENAME_RE = re.compile(r"^\S*\." + _IMAGE_EXT + r"(?:[?#]\S*)?$", re.IGNORECASE)
_PATH_RE = re.compile(r"^(?:[a-z]+:)?[/\\.~]?[\w.~%-]+(?:[/\\][\w.~%-]+)+/?$", re.IGNORECASE)
_SLUG_RE = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+){1,}(?:@\dx)?$")
# A proper name or acronym ("W3C", "GitHub", "Mozilla Firefox"): a legitimate alt for a logo
# even when it is also the file's stem, unlike "beach_day" or "img2023".
_NAME_RE = re.compile(r"[A-Z][A-Za-z0-9]*(?: [A-Z][A-Za-z0-9]*)*")
_DIGIT_RUN = re.compile(r"\d{2,}")
# Template syntax (Liquid/Jinja/Django, Handlebars/Mustache, ERB/EJS): not page text.
_TEMPLATE_RE = re.compile(r"\{\{\{.*?\}\}\}|\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}|<%.*?%>", re.DOTALL)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?", re.IGNORECASE)


def normalize(text: str) -> str:
    """Lower case, words only, single spaces: the form alt text is compared in."""
    return " ".join(_WORD.findall(text.lower()))


def strip_template(text: str) -> str:
    """``text`` without template tags (``{% include x %}``, ``{{ page.title }}``, ``<%= x %>``)."""
    return _TEMPLATE_RE.sub(" ", text)


def is_name_like(text: str) -> bool:
    """A capitalised name or acronym, not a file-name-like string (no extension, separator or digit run)."""
    return bool(_NAME_RE.fullmatch(text)) and not _DIGIT_RUN.search(text)


def _stem_of(url: str | None) -> str:
    if not url or url.startswith("data:"):
        return ""
    path = unquote(urlsplit(url).path)
    return normalize(PurePosixPath(path).stem.replace("_", " ").replace("-", " "))


def alt_problems(element: Element, max_chars: int) -> list[Problem]:
    """What is wrong with the element's existing, non-empty alt text (purpose-independent rules)."""
    alt = element.alt
    if alt is None or alt == "":
        return []
    label = _label(element)
    stripped = alt.strip()
    if not stripped:
        return [Problem("alt-whitespace", f"{label} is only white space")]
    norm = normalize(stripped)
    quoted = _quote(stripped)
    if _CAMERA_RE.match(stripped):
        return [Problem("alt-camera-name", f"{label} {quoted} is a camera or screenshot file name")]
    if _FILENAME_RE.match(stripped) or (" " not in stripped and _PATH_RE.match(stripped)):
        return [Problem("alt-filename", f"{label} {quoted} is a file name or path")]
    if (
        any(_stem_of(u) and _stem_of(u) == norm for u in element.sources[:1])
        and (_SLUG_RE.match(stripped.lower()) or " " not in stripped)
        and not is_name_like(stripped)
    ):
        return [Problem("alt-filename", f"{label} {quoted} is the image's file name")]
    if _SLUG_RE.match(stripped) and not stripped.replace("-", "").replace("_", "").isdigit():
        return [Problem("alt-filename", f"{label} {quoted} looks like a file name or slug")]
    if norm in _PLACEHOLDER_WORDS or _PLACEHOLDER_RE.match(stripped) or _PLACEHOLDER_RE.match(norm):
        return [Problem("alt-placeholder", f"{label} {quoted} is placeholder text")]
    if _GENERIC_RE.match(stripped) or _GENERIC_RE.match(norm):
        return [
            Problem(
                "alt-generic",
                f"{label} {quoted} is a generic word that does not describe the image",
            )
        ]
    problems = []
    if LEAD_IN.match(stripped):
        problems.append(
            Problem("alt-redundant-prefix", f"{label} {quoted} starts with a redundant lead-in")
        )
    if len(stripped) > max_chars:
        problems.append(
            Problem(
                "alt-too-long",
                f"{label} is {len(stripped)} characters, over the limit of {max_chars}",
            )
        )
    return problems


def _quote(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _label(element: Element) -> str:
    return {
        "alt": "alt text",
        "aria-label": "aria-label",
        "aria-labelledby": "aria-labelledby text",
        "title": "title",
        "markdown": "alt text",
    }.get(element.name_from, "alt text")


def repeats(alt: str, neighbours: list[str]) -> bool:
    """True when ``alt`` says nothing the neighbouring text does not already say word for word."""
    norm = normalize(alt)
    if not norm:
        return False
    for text in neighbours:
        other = normalize(strip_template(text))
        if not other:
            continue
        if norm == other:
            return True
        # A phrase of two words or more found whole inside the neighbouring text.
        if " " in norm and f" {norm} " in f" {other} ":
            return True
    return False


_STOP = frozenset(
    "a an the and or of with in on at to for from by as is are was were be it its this that "
    "there their his her some two three four five several many near next into onto over under up "
    "down out front top side behind while very".split()
)


def content_words(text: str) -> list[str]:
    words = []
    for w in normalize(text).split():
        if w in _STOP or len(w) < 3:
            continue
        words.append(w[:-1] if w.endswith("s") and len(w) > 3 and not w.endswith("ss") else w)
    return words


def covered_by(caption: str, neighbours: list[str], threshold: float = 0.75) -> bool:
    """True when most content words of ``caption`` already appear in the neighbouring text."""
    words = content_words(caption)
    if len(words) < 2:
        return False
    pool = set()
    for text in neighbours:
        pool.update(content_words(text))
    hits = sum(1 for w in words if w in pool)
    return hits / len(words) >= threshold
