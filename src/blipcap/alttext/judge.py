"""Decide each image's purpose and its alt text, following the W3C alt decision tree.

The tree (https://www.w3.org/WAI/tutorials/images/decision-tree/) asks, in
order: does the image contain text; is it in a link or button; does it add
meaning (and is that meaning already in the text nearby); is it decorative.
Here the same questions are answered from facts, never guesses:

1. :func:`judge_markup` uses only the markup: missing or bad alt, hidden or
   presentational images, spacers, images inside links or buttons, image
   buttons and map areas. It needs no model, so ``--check`` runs it alone.
2. :func:`judge_image` adds what the image itself says: its size, the text
   OCR reads in it, and the caption BLIP writes for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from ..text import cut_at_word, strip_lead_in, to_alt_text
from .doubts import DEFAULT_MIN_CONFIDENCE, degenerate, is_chart_text
from .model import Doubt, Element, Finding, ImageInfo, Problem
from .rules import alt_problems, covered_by, normalize, repeats, strip_template

DEFAULT_MAX_CHARS = 150
_SPACER_NAMES = re.compile(
    r"(?:^|[/_-])(?:spacer|blank|pixel|transparent|clear|shim|dot|1x1|trans|px|empty)\.(?:gif|png|svg|webp)$",
    re.IGNORECASE,
)
_COMPLEX_WORDS = re.compile(
    r"\b(?:chart|charts|graph|graphs|diagram|diagrams|plot|plots|infographic|flowchart|flow chart|"
    r"schematic|map|maps|timeline|blueprint|floor plan|histogram|scatter ?plot|org chart|dashboard)\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# Problems a cheap rewrite of the existing text fixes, without looking at the image.
_REWRITABLE = {"alt-redundant-prefix", "alt-too-long"}


@dataclass(frozen=True)
class JudgeOptions:
    max_chars: int = DEFAULT_MAX_CHARS
    # A caption whose confidence score is below this goes to a person (0 turns the check off).
    min_confidence: float = DEFAULT_MIN_CONFIDENCE


def _hidden(e: Element) -> bool:
    role = (e.attrs.get("role") or "").strip().lower()
    return (e.attrs.get("aria-hidden") or "").strip().lower() == "true" or role in (
        "presentation",
        "none",
    )


def _int(value: str | None) -> int | None:
    try:
        return int(float((value or "").strip().rstrip("px")))
    except ValueError:
        return None


def _spacer(e: Element) -> bool:
    w, h = _int(e.attrs.get("width")), _int(e.attrs.get("height"))
    if w is not None and h is not None and w <= 2 and h <= 2:
        return True
    src = e.src or ""
    return bool(src and not src.startswith("data:") and _SPACER_NAMES.search(urlsplit(src).path))


def is_functional(e: Element) -> bool:
    """The image alone names a link, a button, an image button or a map area."""
    ctx = e.context
    if e.kind in ("area", "input-image"):
        return True
    return ctx.control in ("a", "button") and not ctx.control_text and not ctx.link_label


def describe_href(href: str | None) -> str | None:
    """A short name for a link's destination taken from its URL, or None when the URL says nothing.

    A name without a word in it (``href="[…]"``, a placeholder in tutorials) says nothing.
    """
    name = _describe_href(href)
    return name if name and _HAS_WORD.search(name) else None


_HAS_WORD = re.compile(r"[^\W\d_]{2,}")


def _describe_href(href: str | None) -> str | None:
    if not href:
        return None
    href = href.strip()
    low = href.lower()
    if low.startswith("#") or low.startswith("javascript:"):
        return None
    if low.startswith("mailto:"):
        address = unquote(href[7:].split("?")[0])
        return f"Email {address}" if address else None
    if low.startswith("tel:"):
        return f"Call {unquote(href[4:])}"
    parts = urlsplit(href)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    while segments and PurePosixPath(segments[-1]).stem.lower() in (
        "index",
        "default",
        "home",
        "main",
    ):
        segments.pop()
    if segments:
        stem = PurePosixPath(segments[-1]).stem if "." in segments[-1] else segments[-1]
        words = re.sub(r"[-_+.]+", " ", stem).strip()
        if words and not words.isdigit():
            return words[0].upper() + words[1:].lower()
        return None
    if parts.netloc:
        host = parts.netloc.split("@")[-1].split(":")[0]
        host = host[4:] if host.startswith("www.") else host
        return f"{host} home page"
    if parts.path.startswith("/") or href in (".", "./", ""):
        return "Home page"
    return None


def _neighbours(e: Element) -> list[str]:
    ctx = e.context
    return [t for t in (ctx.figcaption, ctx.control_text, ctx.text_before, ctx.text_after) if t]


def _repeats_nearby(e: Element, alt: str) -> bool:
    ctx = e.context
    close = [t for t in (ctx.control_text, ctx.figcaption) if t]
    before = _SENTENCE.split(ctx.text_before)[-1] if ctx.text_before else ""
    after = _SENTENCE.split(ctx.text_after)[0] if ctx.text_after else ""
    if repeats(alt, close):
        return True
    # Running text: the sentence next to the image, or a long phrase found whole in it.
    norm = normalize(alt)
    if norm and norm in (normalize(strip_template(before)), normalize(strip_template(after))):
        return True
    return len(norm.split()) >= 4 and repeats(alt, [ctx.text_before, ctx.text_after])


def _shorten(alt: str, max_chars: int) -> str:
    """Fix a lead-in or an over-long alt from the existing text: whole sentences if they fit."""
    text = strip_lead_in(alt.strip())
    if len(text) > max_chars:
        kept = ""
        for sentence in _SENTENCE.split(text):
            if len(kept) + len(sentence) + 1 > max_chars:
                break
            kept = f"{kept} {sentence}".strip()
        text = kept or cut_at_word(text, max_chars - 1)
    return to_alt_text(text, max_chars, from_image_text=True)


def is_image_map(e: Element) -> bool:
    """An image-map area, or the image that carries the map (``<img usemap>``)."""
    return e.kind == "area" or bool((e.attrs.get("usemap") or "").strip())


# Proposals taken from the author's own words: no person needs to confirm them.
_AUTHORED = ("rewrote the existing text", "the link's or control's title")


def judge_markup(e: Element, opts: JudgeOptions = JudgeOptions()) -> Finding:
    """Everything that can be decided from the markup alone."""
    f = _judge_markup(e, opts)
    if f.status != "ok" and is_image_map(e) and f.reason not in _AUTHORED:
        what = "image-map area" if e.kind == "area" else "image that carries an image map"
        f.doubts.append(
            Doubt(
                "image-map",
                f"an {what}: only a person knows what each region links to and what the map "
                "is for; write its alt by hand",
            )
        )
    return f


def _judge_markup(e: Element, opts: JudgeOptions) -> Finding:
    functional = is_functional(e)
    hidden = _hidden(e)
    problems: list[Problem] = []
    alt = e.alt
    what = {"input-image": "image button", "area": "image-map area", "role-img": 'role="img" element',
            "svg-img": '<svg role="img">'}.get(e.kind, "image")  # fmt: skip
    if alt is None:
        if not hidden:
            problems.append(Problem("alt-missing", f"{what} has no text alternative"))
    else:
        problems.extend(alt_problems(e, opts.max_chars))
        if not alt.strip() and functional and not hidden:
            problems.append(
                Problem(
                    "alt-empty-functional",
                    f"{what} is the only content of its control but its alt is empty",
                )
            )
        elif alt.strip() and not problems and not functional and _repeats_nearby(e, alt):
            problems.append(
                Problem(
                    "alt-repeats-text", f"alt text {alt.strip()[:60]!r} repeats the text next to it"
                )
            )
        if hidden and alt.strip() and not problems:
            pass  # hidden from assistive technology: whatever the alt says is not read
    finding = Finding(
        element=e, status="ok" if not problems else "fix", purpose="unknown", problems=problems
    )
    if not problems:
        if hidden or (alt is not None and not alt.strip()):
            finding.purpose = "decorative"
        else:
            finding.purpose = "functional" if functional else "informative"
        return finding
    rules = {p.rule for p in problems}
    if rules <= _REWRITABLE:
        finding.purpose = "functional" if functional else "informative"
        finding.proposed = _shorten(alt or "", opts.max_chars)
        finding.reason = "rewrote the existing text"
        if "alt-too-long" in rules:
            finding.notes.append(
                "The full text no longer fits in alt: put it on the page as a long description. "
                f"Original: {alt.strip()}"
            )
        return finding
    if "alt-repeats-text" in rules:
        return _decorative(finding, "the text next to it already says the same")
    if hidden:
        return _decorative(finding, "aria-hidden or a presentation role hides it")
    if _spacer(e):
        return _decorative(finding, "a spacer or tracking image (1x1 or spacer file name)")
    ctx = e.context
    if ctx.control in ("a", "button") and (ctx.control_text or ctx.link_label):
        which = "link" if ctx.control == "a" else "button"
        return _decorative(finding, f"the {which}'s own text already names it")
    if functional:
        finding.purpose = "functional"
        given = ctx.link_title or (e.attrs.get("title") or "").strip() or None
        if given:
            finding.proposed = to_alt_text(given, opts.max_chars, from_image_text=True)
            finding.reason = "the link's or control's title"
            return finding
    if e.kind in ("role-img", "svg-img") and not e.sources:
        finding.status = "manual"
        finding.reason = "no image to describe: give the element an aria-label by hand"
        return finding
    finding.reason = "needs the image"
    return finding


def needs_image(f: Finding) -> bool:
    return f.status == "fix" and f.proposed is None and f.reason == "needs the image"


def _decorative(f: Finding, why: str) -> Finding:
    f.purpose = "decorative"
    f.proposed = ""
    f.reason = why
    return f


def _functional_fallback(f: Finding, opts: JudgeOptions) -> bool:
    e = f.element
    ctx = e.context
    if e.kind == "input-image":
        target = describe_href(ctx.form_action)
        name = ctx.link_label or target
    else:
        name = describe_href(ctx.link_href)
    if name:
        f.proposed = to_alt_text(name, opts.max_chars, from_image_text=True)
        f.reason = (
            "named after the destination"
            if e.kind != "input-image"
            else "named after the form action"
        )
        return True
    return False


def judge_image(f: Finding, info: ImageInfo, opts: JudgeOptions = JudgeOptions()) -> Finding:
    """Finish a decision that needed the image: size, OCR text, caption.

    A proposal a person must check before it is written gets a :class:`Doubt`:
    a caption below ``opts.min_confidence`` or visibly broken, a chart or
    diagram, an image map, a link or button whose purpose the page does not say.
    """
    f.image = info
    e = f.element
    functional = f.purpose == "functional" or is_functional(e)
    if info.width is not None and info.height is not None and info.width <= 2 and info.height <= 2:
        return _decorative(f, f"a {info.width}x{info.height} pixel spacer or tracking image")
    if info.error and not (info.ocr_text or info.caption):
        if functional and _functional_fallback(f, opts):
            f.purpose = "functional"
            return f  # the destination names it; the image itself was not needed
        if e.kind == "area" and not e.sources:
            # An area has no image of its own: nothing is unreadable, there is just no name.
            f.purpose, f.status = "functional", "manual"
            f.reason = "an image-map area whose link target names nothing"
            return f
        f.problems.append(Problem("image-unreadable", info.error))
        f.status = "manual"
        f.reason = "the image could not be read, so nothing is proposed"
        return f
    if info.ocr_text and is_chart_text(info.ocr_text):
        # Axis numbers are not a description: never an alt, only a hint for the person.
        return _complex(f, info, opts, "the text in the image is mostly numbers and axis labels")
    if info.ocr_text:
        return _image_of_text(f, info.ocr_text, functional, opts)
    if functional:
        f.purpose = "functional"
        if _functional_fallback(f, opts):
            return f
        if info.caption:
            f.proposed = to_alt_text(info.caption, opts.max_chars)
            f.reason = "caption (check that it names the link's destination or the button's action)"
            f.doubts.append(
                Doubt(
                    "unclear-function",
                    "the page does not say where this link goes or what this button does; "
                    "the caption describes the picture, not its purpose",
                )
            )
            _caption_doubts(f, info, opts)
            return f
    if not info.caption:
        f.reason = "no caption available"
        return f
    why = _complex_signal(e, info.caption)
    if why:
        return _complex(f, info, opts, why)
    if covered_by(info.caption, _neighbours(e)) and not degenerate(info.caption):
        return _decorative(f, "the figure caption or text next to it already describes it")
    f.purpose = "informative"
    f.proposed = to_alt_text(info.caption, opts.max_chars)
    f.reason = "caption written as alt text"
    _caption_doubts(f, info, opts)
    return f


def _image_of_text(f: Finding, text: str, functional: bool, opts: JudgeOptions) -> Finding:
    e = f.element
    if not functional and repeats(text, _neighbours(e)):
        return _decorative(f, "the text in the image is also on the page")
    f.purpose = "functional" if functional else "text"
    alt = text
    if functional and (describe_href(e.context.link_href) or "").lower().endswith("home page"):
        alt = f"{text} home page"
    f.proposed = to_alt_text(alt, opts.max_chars, from_image_text=True)
    f.reason = "the text in the image (OCR)"
    if len(text) > opts.max_chars:
        f.purpose = "complex"
        f.problems.append(
            Problem("long-description-needed", "the image holds more text than fits in alt")
        )
        f.notes.append(f"Put the image's full text on the page: {text}")
        f.doubts.append(
            Doubt(
                "complex",
                "the image holds more text than fits in alt: a person chooses the short alt "
                "and puts the full text on the page",
            )
        )
    return f


def _complex_signal(e: Element, caption: str) -> str | None:
    """Why the image looks like a chart or diagram (caption, file name, figure caption), or None."""
    stem = re.sub(r"[-_.]", " ", unquote(urlsplit(e.src or "").path))
    for what, text in (
        ("the caption", caption),
        ("the file name", stem),
        ("the figure caption", e.context.figcaption or ""),
    ):
        m = _COMPLEX_WORDS.search(text)
        if m:
            return f"{what} says {m.group(0).lower()!r}"
    return None


def _complex(f: Finding, info: ImageInfo, opts: JudgeOptions, why: str) -> Finding:
    """A chart or diagram: a short alt (the caption, as a draft) plus a long description."""
    f.purpose = "complex"
    if info.caption:
        f.proposed = to_alt_text(info.caption, opts.max_chars)
        f.reason = "caption; a chart or diagram needs a long description too"
        _caption_doubts(f, info, opts)
    else:
        f.reason = "a chart or diagram: nothing the model can write replaces a person's description"
    f.doubts.insert(
        0,
        Doubt(
            "complex",
            f"a chart or diagram ({why}): a person writes a short alt naming what it shows "
            "and a long description of the data",
        ),
    )
    if info.ocr_text:
        f.notes.append(f"Text read in the image (for the long description): {info.ocr_text}")
    if not f.element.context.described:
        f.problems.append(
            Problem(
                "long-description-needed",
                "a chart or diagram needs a long description besides its alt",
            )
        )
        f.notes.append(
            "Describe the data or structure in the text or a linked page (WCAG technique G92)."
        )
    return f


def _caption_doubts(f: Finding, info: ImageInfo, opts: JudgeOptions) -> None:
    """Doubts about the caption itself: low confidence, or visibly broken."""
    if info.caption and (why := degenerate(info.caption)):
        f.doubts.append(Doubt("degenerate-caption", f"the caption looks broken: {why}"))
    if info.confidence is not None and info.confidence < opts.min_confidence:
        f.doubts.append(
            Doubt(
                "low-confidence",
                f"the model is unsure of this caption (confidence {info.confidence:.2f}, "
                f"below {opts.min_confidence:g})",
            )
        )
