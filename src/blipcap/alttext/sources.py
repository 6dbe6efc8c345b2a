"""Where an image comes from: page-relative paths, the site root, data: URIs, the web.

Nothing is guessed: an image that is missing, remote without
``--fetch-remote``, refused by the SSRF-safe fetcher, or undecodable becomes
an :class:`ImageInfo` with an ``error`` that the report shows as such.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from ..errors import BlipcapError, InputError

MAX_IMAGE_BYTES = 50 * 2**20
MAX_SVG_BYTES = 2 * 2**20


@dataclass(frozen=True)
class Resolved:
    """An image reference made concrete: a local file, inline bytes, or a URL to fetch."""

    src: str
    path: Path | None = None
    data: bytes | None = None
    url: str | None = None
    error: str | None = None

    @property
    def key(self) -> str:
        return (
            str(self.path)
            if self.path
            else self.url or f"data:{hashlib.sha256(self.data or b'').hexdigest()}"
        )


def resolve(src: str, page: Path, base_dir: Path | None) -> Resolved:
    """Resolve ``src`` as written in ``page``."""
    src = src.strip()
    if src.startswith("data:"):
        try:
            return Resolved(src, data=decode_data_uri(src))
        except ValueError as exc:
            return Resolved(src, error=f"bad data: URI ({exc})")
    parts = urlsplit(src)
    if parts.scheme in ("http", "https") or src.startswith("//"):
        return Resolved(src, url=src if parts.scheme else "https:" + src)
    if parts.scheme == "file":
        return Resolved(src, path=Path(unquote(parts.path)))
    if parts.scheme:
        return Resolved(src, error=f"unsupported URL scheme {parts.scheme!r}")
    path = unquote(parts.path)
    if not path:
        return Resolved(src, error="empty image URL")
    if path.startswith("/"):
        if base_dir is None:
            return Resolved(
                src, error=f"root-relative URL {src!r}: pass --base-dir SITE_ROOT to resolve it"
            )
        return Resolved(src, path=base_dir / path.lstrip("/"))
    return Resolved(src, path=page.parent / path)


def decode_data_uri(uri: str) -> bytes:
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        raise ValueError("no comma")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(re.sub(r"\s+", "", unquote(payload)), validate=True)
        except binascii.Error as exc:
            raise ValueError(f"invalid base64: {exc}") from exc
    return unquote_to_bytes(payload)


def read_bytes(ref: Resolved, *, fetch_remote: bool) -> bytes:
    """The image's bytes, or :class:`InputError` saying why not."""
    if ref.error:
        raise InputError(ref.error)
    if ref.data is not None:
        return ref.data
    if ref.url is not None:
        if not fetch_remote:
            raise InputError(f"remote image {ref.url} not fetched: pass --fetch-remote to read it")
        from ..fetch import fetch_url

        return fetch_url(ref.url, max_bytes=MAX_IMAGE_BYTES).data
    assert ref.path is not None
    try:
        size = ref.path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"image file not found: {ref.path}") from None
    except OSError as exc:
        raise InputError(f"cannot read {ref.path}: {exc.strerror}") from None
    if not ref.path.is_file():
        raise InputError(f"not a file: {ref.path}")
    if size > MAX_IMAGE_BYTES:
        raise InputError(f"{ref.path}: {size} bytes is over the {MAX_IMAGE_BYTES}-byte image limit")
    return read_regular_file(ref.path, MAX_IMAGE_BYTES)


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file, at most ``max_bytes``; a FIFO, socket or device is an InputError.

    A special file is refused without being read: a FIFO named ``logo.png`` or
    ``index.html`` would otherwise block the run forever.
    """
    from ..images import open_regular_file

    with open_regular_file(path) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputError(f"{path}: grew past the {max_bytes}-byte limit while being read")
    return data


def is_svg(data: bytes) -> bool:
    head = data[:2048].lstrip().lower()
    return head.startswith(b"<svg") or (
        head.startswith((b"<?xml", b"<!--", b"<!doctype svg")) and b"<svg" in head
    )


def svg_text(data: bytes) -> tuple[str | None, str]:
    """(title, visible text) of an SVG file; it is read as XML, never rendered."""
    if len(data) > MAX_SVG_BYTES:
        raise InputError(f"SVG of {len(data)} bytes is over the {MAX_SVG_BYTES}-byte limit")
    if b"<!ENTITY" in data:
        raise InputError("SVG declares XML entities; refused (entity expansion attacks)")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise InputError(f"SVG is not well-formed XML: {exc}") from None

    def local(tag: object) -> str:
        return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""

    title = next(
        (" ".join("".join(el.itertext()).split()) for el in root if local(el.tag) == "title"), None
    )
    texts = [
        " ".join("".join(el.itertext()).split()) for el in root.iter() if local(el.tag) == "text"
    ]
    return title or None, " ".join(t for t in texts if t)


class OcrReader:
    """Reads the text in an image with blipcap.documents (RapidOCR by default).

    ``read`` returns ``(text, coverage)``: the confident text in reading order
    and the share of the image area its lines cover.
    """

    def __init__(self, engine: str = "rapidocr", min_confidence: float = 0.8):
        self.engine = engine
        self.min_confidence = min_confidence
        self.name = f"{engine}@{min_confidence}"

    def read(self, image) -> tuple[str, float]:
        from ..documents import ocr_image

        result = ocr_image(image, self.engine, min_confidence=self.min_confidence)
        area = max(1, image.width * image.height)
        covered = sum(
            max(0, ln.box[2] - ln.box[0]) * max(0, ln.box[3] - ln.box[1]) for ln in result.lines
        )
        text = " ".join(ln.text for ln in result.lines) if result.lines else ""
        return " ".join(text.split()), min(1.0, covered / area)


def is_image_of_text(
    text: str, coverage: float | None, *, min_chars: int = 3, min_coverage: float = 0.12
) -> bool:
    """Enough confident characters, covering enough of the image, to call it an image of text."""
    chars = sum(c.isalnum() for c in text)
    return chars >= min_chars and (coverage is None or coverage >= min_coverage)


class BlipCaptions:
    """Captions from a blipcap :class:`~blipcap.Captioner`, created only when first needed."""

    def __init__(
        self, model=None, backend="auto", device="auto", dtype="auto", preset=None, **overrides
    ):
        self.model, self.backend, self.device, self.dtype = model, backend, device, dtype
        self.preset = preset
        self.overrides = {k: v for k, v in overrides.items() if v is not None}
        self._captioner = None
        self._key: str | None = None

    def key(self) -> str:
        """Model id, revision and caption options: what a cached caption must match."""
        if self._key is None:
            from ..hub import resolve_model
            from ..options import resolve_options, settings_key

            files = resolve_model(self.model)
            opts = resolve_options(preset=self.preset, **self.overrides)
            self._key = settings_key(files.model_id, files.revision, opts)
        return self._key

    @property
    def captioner(self):
        if self._captioner is None:
            from ..captioner import get_captioner

            self._captioner = get_captioner(self.model, self.backend, self.device, self.dtype)
        return self._captioner

    def caption(
        self, images: list, progress: bool = False
    ) -> tuple[list[tuple[str | None, str | None, float | None]], dict, bool]:
        """Caption ``images`` in one call: ([(caption, error, confidence)], provenance, random_weights).

        ``confidence`` is the caption's score in 0..1 when the captioner gives one, else None.
        """
        from .doubts import confidence_score

        cap = self.captioner
        results = cap.caption(images, preset=self.preset, progress=progress, **self.overrides)
        prov = results[0].provenance if results and results[0].provenance else None
        provenance = _provenance_dict(prov)
        return (
            [
                (
                    r.caption,
                    r.error.message if r.error else None,
                    confidence_score(getattr(r, "confidence", None)),
                )
                for r in results
            ],
            provenance,
            bool(cap.random_weights),
        )


def _provenance_dict(prov) -> dict:
    if prov is None:
        return {}
    from dataclasses import asdict

    return asdict(prov)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, BlipcapError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
