"""The alt-text pipeline: collect pages -> scan -> judge the markup -> read images -> judge.

Images are read once per distinct content (SHA-256), OCR and captions come
from the cache when they can, and every image still missing a caption goes
to the model in one ``caption()`` call, so the captioner batches the whole
run. Without a caption source (``--check``) nothing is read at all.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..errors import InputError
from .approved import ApprovedAlts
from .cache import CaptionCache
from .doubts import DEFAULT_MIN_CONFIDENCE, confidence_score, is_chart_text
from .encoding import Decoded, EncodingError, decode
from .judge import (
    JudgeOptions,
    describe_href,
    is_functional,
    judge_image,
    judge_markup,
    needs_image,
)
from .model import Element, Finding, ImageInfo
from .rules import RULES
from .scan_html import scan_html
from .scan_markdown import scan_markdown
from .sources import (
    OcrReader,
    Resolved,
    describe_error,
    is_image_of_text,
    is_svg,
    read_bytes,
    read_regular_file,
    resolve,
    svg_text,
)

HTML_SUFFIXES = frozenset([".html", ".htm", ".xhtml", ".shtml"])
MARKDOWN_SUFFIXES = frozenset([".md", ".markdown", ".mdown", ".mkd", ".mkdn"])
SKIP_DIRS = frozenset(["node_modules", "__pycache__", "venv", "site-packages"])
MAX_PAGE_BYTES = 20 * 2**20


class CaptionSource(Protocol):
    """What the pipeline needs from a captioner (blipcap's, or a fake in tests)."""

    def key(self) -> str: ...

    def caption(
        self, images: list, progress: bool = False
    ) -> tuple[list[tuple[str | None, str | None]], dict, bool]:
        """([(caption, error)] or [(caption, error, confidence)], provenance, random_weights).

        ``confidence`` is optional: a number in 0..1 or anything
        :func:`~blipcap.alttext.doubts.confidence_score` reads.
        """
        ...


ImageReader = Callable[[Resolved], bytes]
"""An image's bytes, or :class:`InputError` saying why not (default: :func:`.sources.read_bytes`)."""


@dataclass(frozen=True)
class AltTextOptions:
    max_chars: int = 150
    base_dir: Path | None = None
    fetch_remote: bool = False
    min_confidence: float = DEFAULT_MIN_CONFIDENCE


@dataclass
class Page:
    path: Path
    markdown: bool
    base_dir: Path | None = None
    decoded: Decoded | None = None
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None


@dataclass
class Stats:
    files: int = 0
    elements: int = 0
    images_read: int = 0
    captioned: int = 0
    caption_cache_hits: int = 0
    ocr_read: int = 0
    ocr_cache_hits: int = 0
    approved_reused: int = 0


@dataclass
class Run:
    pages: list[Page]
    stats: Stats = field(default_factory=Stats)
    provenance: dict | None = None
    random_weights: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return [f for p in self.pages for f in p.findings]

    @property
    def to_fix(self) -> list[Finding]:
        return [f for f in self.findings if needs_fixing(f)]

    @property
    def failed_pages(self) -> list[Page]:
        return [p for p in self.pages if p.error]

    @property
    def for_a_person(self) -> list[Finding]:
        return [f for f in self.findings if needs_person(f)]


def needs_fixing(f: Finding) -> bool:
    """A problem above note level (a long-description note alone does not fail --check)."""
    return any(RULES[p.rule][3] != "note" for p in f.problems)


def needs_person(f: Finding) -> bool:
    """Needs fixing, and either nothing was proposed or the proposal is in doubt."""
    return needs_fixing(f) and (f.proposed is None or bool(f.doubts))


def person_reason(f: Finding) -> str:
    """Why a person must look at ``f`` (empty when they need not)."""
    if not needs_person(f):
        return ""
    if f.doubts:
        return "; ".join(d.message for d in f.doubts)
    if f.image is not None and f.image.error:
        return f"nothing proposed: {f.image.error}"
    return f"nothing proposed: {f.reason}" if f.reason else "nothing proposed"


def collect(paths: list[str | os.PathLike[str]], base_dir: Path | None = None) -> list[Page]:
    """Pages under ``paths`` (files as given; directories walked for HTML and Markdown files)."""
    pages: list[Page] = []
    seen: set[Path] = set()

    def add(path: Path, root: Path | None) -> None:
        key = path.resolve()
        if key in seen:
            return
        seen.add(key)
        suffix = path.suffix.lower()
        pages.append(Page(path, suffix in MARKDOWN_SUFFIXES, base_dir or root))

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(
                    d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS
                )
                for name in sorted(filenames):
                    suffix = Path(name).suffix.lower()
                    if suffix in HTML_SUFFIXES or suffix in MARKDOWN_SUFFIXES:
                        add(Path(dirpath) / name, path)
        elif path.is_file():
            add(path, None)
        else:
            page = Page(path, path.suffix.lower() in MARKDOWN_SUFFIXES)
            page.error = f"{path}: no such file or directory"
            pages.append(page)
    return pages


def scan_page(page: Page, opts: JudgeOptions) -> None:
    """Read, decode and scan one page and judge its markup; errors land in ``page.error``."""
    if page.error:
        return
    try:
        size = page.path.stat().st_size
        if size > MAX_PAGE_BYTES:
            raise InputError(
                f"{page.path}: {size} bytes is over the {MAX_PAGE_BYTES}-byte page limit"
            )
        raw = read_regular_file(page.path, MAX_PAGE_BYTES)
        page.decoded = decode(raw, html=not page.markdown, path=str(page.path))
    except EncodingError as exc:
        page.error = str(exc)
        return
    except (OSError, InputError) as exc:
        page.error = (
            describe_error(exc)
            if isinstance(exc, InputError)
            else f"{page.path}: {exc.strerror or exc}"
        )
        return
    text = page.decoded.text
    elements = scan_markdown(text, page.path) if page.markdown else scan_html(text, page.path)
    page.findings = [judge_markup(e, opts) for e in elements]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class _Image:
    ref: Resolved
    data: bytes | None  # kept for inline and remote images; local files are re-read by path
    info: ImageInfo


def run_alt_text(
    paths: list[str | os.PathLike[str]],
    options: AltTextOptions = AltTextOptions(),
    *,
    captions: CaptionSource | None = None,
    ocr: OcrReader | None = None,
    cache: CaptionCache | None = None,
    progress: bool = False,
    approved: ApprovedAlts | None = None,
    reader: ImageReader | None = None,
) -> Run:
    """Scan ``paths`` and decide every text alternative; with ``captions``, propose new alt text.

    With ``approved``, an image a reviewer already wrote alt text for (same
    bytes, same role) gets that text again instead of a machine proposal.

    ``reader`` replaces how image bytes are read (the HTTP service reads only
    data: URIs and URLs, never its own disk).
    """
    judge_opts = JudgeOptions(max_chars=options.max_chars, min_confidence=options.min_confidence)
    run = Run(pages=collect(paths, options.base_dir))
    for page in _bar(run.pages, progress, "scanning pages"):
        scan_page(page, judge_opts)
    run.stats.files = len(run.pages)
    run.stats.elements = len(run.findings)
    if captions is None and ocr is None and approved is None:
        return run
    cache = cache or CaptionCache(None)
    pending = [(p, f) for p in run.pages for f in p.findings if needs_image(f)]
    images: dict[str, _Image] = {}  # by Resolved.key
    by_sha: dict[str, _Image] = {}
    chosen: dict[int, _Image] = {}
    for page, f in _bar(pending, progress, "reading images"):
        first_error = None
        for src in f.element.sources or []:
            ref = resolve(src, page.path, page.base_dir)
            img = images.get(ref.key)
            if img is None:
                img = _read(ref, options, run, reader)
                images[ref.key] = img
                if img.info.sha256 and img.info.sha256 in by_sha:
                    img = by_sha[img.info.sha256]  # same content under another name
                elif img.info.sha256:
                    by_sha[img.info.sha256] = img
            if img.info.error is None:
                chosen[id(f)] = img
                break
            first_error = first_error or img
        else:
            chosen[id(f)] = first_error or _Image(
                Resolved(""), None, ImageInfo(error="the element names no image source")
            )
    if approved is not None:
        pending = [(p, f) for p, f in pending if not _reuse(f, chosen[id(f)].info, approved, run)]
    if ocr is not None:
        _read_text(list(by_sha.values()), ocr, cache, run, progress)
    if captions is not None:
        wanted = [img for p, f in pending if (img := chosen[id(f)]) and _needs_caption(f, img.info)]
        _caption(wanted, captions, cache, run, progress)
    for _page, f in pending:
        judge_image(f, chosen[id(f)].info, judge_opts)
    return run


def _reuse(f: Finding, info: ImageInfo, approved: ApprovedAlts, run: Run) -> bool:
    """Give ``f`` the alt a reviewer approved for the same image in the same role, if any."""
    if info.error or not info.sha256:
        return False
    e = f.element
    alt = approved.lookup(info.sha256, approved_link(e))
    if alt is None:
        return False
    f.image = info
    f.proposed = alt
    f.purpose = "functional" if is_functional(e) else ("decorative" if alt == "" else "informative")
    f.reason = "approved by a reviewer for this image before"
    f.doubts = []  # a person already decided
    run.stats.approved_reused += 1
    return True


def approved_link(e: Element) -> str | None:
    """The role an approval is tied to: the link target of a functional image, else None."""
    if not is_functional(e):
        return None
    ctx = e.context
    target = ctx.form_action if e.kind == "input-image" else ctx.link_href
    return (target or "").strip() or "#"


def _read(ref: Resolved, options: AltTextOptions, run: Run, reader: ImageReader | None) -> _Image:
    try:
        data = reader(ref) if reader else read_bytes(ref, fetch_remote=options.fetch_remote)
    except InputError as exc:
        return _Image(ref, None, ImageInfo(error=describe_error(exc)))
    run.stats.images_read += 1
    info = ImageInfo(sha256=_sha(data))
    keep = data if ref.path is None else None
    if is_svg(data):
        # SVG is not rendered here; its own title and text elements are what it says.
        try:
            title, text = svg_text(data)
        except InputError as exc:
            info.error = f"{ref.src}: {exc}"
            return _Image(ref, keep, info)
        if title or text:
            info.ocr_text = title or text
            info.ocr_coverage = None
        else:
            info.error = f"{ref.src}: an SVG without a title or text cannot be described (SVG is not rendered)"
        return _Image(ref, keep, info)
    from ..images import load_image

    try:
        image = load_image(ref.path if ref.path is not None else data, name=ref.src)
    except InputError as exc:
        info.error = describe_error(exc)
        return _Image(ref, keep, info)
    info.width, info.height = image.size
    image.close()
    return _Image(ref, keep, info)


def _read_text(
    images: list[_Image], ocr: OcrReader, cache: CaptionCache, run: Run, progress: bool
) -> None:
    from ..errors import MissingDependencyError
    from ..images import load_image

    todo = [
        img
        for img in images
        if img.info.error is None and img.info.ocr_text is None and (img.info.width or 0) > 2
    ]
    for img in _bar(todo, progress, "reading text in images"):
        sha = img.info.sha256 or ""
        hit = cache.get_ocr(sha, ocr.name)
        if hit is not None:
            run.stats.ocr_cache_hits += 1
            text, coverage = hit
        else:
            try:
                image = load_image(
                    img.ref.path if img.ref.path is not None else img.data, name=img.ref.src
                )
                text, coverage = ocr.read(image)
            except MissingDependencyError as exc:
                run.notes.append(f"images of text were not detected: {exc}")
                return
            except InputError as exc:
                img.info.error = describe_error(exc)
                continue
            run.stats.ocr_read += 1
            cache.put_ocr(sha, ocr.name, text, coverage)
        # A chart's axis labels cover little of it, but they are what marks it as a chart.
        if is_image_of_text(text, coverage) or is_chart_text(text):
            img.info.ocr_text = text
            img.info.ocr_coverage = coverage


def _needs_caption(f: Finding, info: ImageInfo) -> bool:
    if info.error or (info.ocr_text and not is_chart_text(info.ocr_text)):
        return False  # a chart's axis numbers are not its alt: it gets a caption as a draft
    if info.width is not None and info.height is not None and info.width <= 2 and info.height <= 2:
        return False
    e = f.element
    if is_functional(e):
        name = describe_href(
            e.context.form_action if e.kind == "input-image" else e.context.link_href
        )
        return not (name or (e.kind == "input-image" and e.context.link_label))
    return True


def _caption(
    wanted: list[_Image], captions: CaptionSource, cache: CaptionCache, run: Run, progress: bool
) -> None:
    unique: dict[str, _Image] = {}
    for img in wanted:
        if img.info.sha256 and img.info.caption is None:
            unique.setdefault(img.info.sha256, img)
    if not unique:
        return
    key = captions.key()
    missing: list[_Image] = []
    for sha, img in unique.items():
        hit = cache.get_caption(sha, key)
        if hit is None:
            missing.append(img)
            continue
        run.stats.caption_cache_hits += 1
        img.info.caption, img.info.random_weights, prov = hit[:3]
        img.info.confidence = hit[3] if len(hit) > 3 else None
        run.random_weights |= img.info.random_weights
        run.provenance = run.provenance or prov
    if not missing:
        return
    inputs = [str(img.ref.path) if img.ref.path is not None else img.data for img in missing]
    results, provenance, random_weights = captions.caption(inputs, progress=progress)
    run.provenance = provenance or run.provenance
    run.random_weights |= random_weights
    rows = []
    for img, result in zip(missing, results, strict=True):
        text, error = result[0], result[1]
        if error or not text:
            img.info.error = error or "the model returned an empty caption"
            continue
        img.info.caption = text
        img.info.random_weights = random_weights
        img.info.confidence = confidence_score(result[2]) if len(result) > 2 else None
        run.stats.captioned += 1
        rows.append((img.info.sha256, key, text, random_weights, provenance, img.info.confidence))
    cache.put_captions(rows)


def _bar(items, enabled: bool, desc: str):
    if not enabled or len(items) < 2:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="item", file=sys.stderr, leave=False)
