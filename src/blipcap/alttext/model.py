"""The records passed between scanning, judging, writing and reporting."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Kind = Literal["img", "input-image", "area", "role-img", "svg-img", "md-image"]
Purpose = Literal["decorative", "functional", "text", "informative", "complex", "unknown"]
Status = Literal["ok", "fix", "manual"]


@dataclass
class Span:
    """Where new text goes, as character offsets in the decoded file.

    ``mode``:
    - ``value``: replace ``text[start:end]`` (an attribute value or a Markdown alt span);
      ``quote`` is the value's quote character ("" for an unquoted value);
    - ``bare``: the attribute is present without a value; insert ``="..."`` at ``start``;
    - ``insert``: the attribute is absent; insert `` alt="..."`` at ``start``.
    """

    mode: Literal["value", "bare", "insert"]
    start: int
    end: int
    quote: str = '"'
    attr: str = "alt"


@dataclass
class Context:
    """What surrounds an image: the facts the purpose decision works from."""

    link_href: str | None = None
    link_title: str | None = None
    link_label: str | None = None  # aria-label of the enclosing link or button
    control: str | None = None  # "a", "button", "area", "input" (type=image) or None
    control_text: str = ""  # the link's or button's own text, this image left out
    figcaption: str | None = None
    text_before: str = ""
    text_after: str = ""
    form_action: str | None = None
    map_name: str | None = None
    described: bool = False  # aria-describedby or longdesc: a long description exists


@dataclass
class Element:
    """One text alternative in play: an image-like element and its current alt."""

    file: Path
    kind: Kind
    line: int  # 1-based
    column: int  # 1-based, in characters
    offset: int  # character offset of the element in the decoded file
    snippet: str  # the element's source text (shortened) for diffs and reports
    alt: str | None  # current text alternative, decoded; None when absent
    span: Span | None  # where a new alt goes; None when it cannot be written here
    src: str | None = None  # the image URL chosen for captioning
    sources: list[str] = field(default_factory=list)  # every candidate URL, best first
    attrs: dict[str, str | None] = field(default_factory=dict)
    context: Context = field(default_factory=Context)
    name_from: str = "alt"  # "alt", "aria-label", "aria-labelledby", "title", "markdown"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """Why an element's text alternative needs fixing; ``rule`` is a SARIF rule id."""

    rule: str
    message: str


@dataclass(frozen=True)
class Doubt:
    """Why a person must look at a proposal before it is written.

    ``code``: ``low-confidence``, ``degenerate-caption``, ``complex``, ``image-map``,
    ``unclear-function`` (see :mod:`blipcap.alttext.doubts`).
    """

    code: str
    message: str


@dataclass
class ImageInfo:
    """What was learned about the image itself."""

    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None  # why the image could not be used (missing, undecodable, remote)
    caption: str | None = None
    ocr_text: str | None = None
    ocr_coverage: float | None = None
    random_weights: bool = False
    # The caption's confidence score (0..1), when the model gives one.
    confidence: float | None = None


@dataclass
class Finding:
    """The decision for one element: problems, purpose and the proposed alt."""

    element: Element
    status: Status
    purpose: Purpose
    problems: list[Problem] = field(default_factory=list)
    proposed: str | None = None  # None: nothing proposed; "" : alt="" (decorative)
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    image: ImageInfo | None = None
    doubts: list[Doubt] = field(default_factory=list)  # non-empty: a person must review it

    @property
    def changes(self) -> bool:
        """True when writing the proposal would change the file."""
        span = self.element.span
        if self.proposed is None or span is None:
            return False
        if span.mode == "insert":
            return True
        if span.mode == "bare":  # <img alt> already means alt=""
            return self.proposed != ""
        return self.proposed != self.element.alt
