"""Safe image loading: byte and pixel limits, a format allow-list, EXIF orientation, RGB.

Every image that reaches the model goes through :func:`load_image`. Untrusted
bytes meet only the decoders on the allow-list (JPEG, PNG, WebP, GIF, BMP, TIFF,
plus HEIF/AVIF where available); formats with a history of decompression-bomb
bypasses or code execution (EPS runs Ghostscript; FITS, GD, SPIDER, PSD, PDF)
are refused by name before any of their parsers runs. Sizes are checked from
the header before pixels are decoded, only the first frame of an animation or
multi-page file is ever decoded, and every failure becomes an
:class:`~blipcap.errors.InputError` subclass that names the input and the fix,
so a batch reports the item and carries on.
"""

from __future__ import annotations

import glob
import io
import os
import re
import struct
import sys
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
from PIL import ExifTags, Image, ImageOps

from .errors import CorruptImageError, ImageTooLargeError, InputError, UnsupportedFormatError

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_LIMITS",
    "IMAGE_EXTENSIONS",
    "ImageInput",
    "ImageLimits",
    "allowed_formats",
    "expand_inputs",
    "load_image",
    "load_input",
    "read_capped",
    "to_rgb",
]

# Formats decoded without extra packages. AVIF joins when this Pillow build has
# libavif, HEIF when the optional pillow-heif is installed (see allowed_formats()).
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    ".jpg .jpeg .jpe .jfif .png .apng .webp .gif .bmp .dib .tif .tiff .heic .heif .hif .avif".split()
)

HEIF_HINT = "install HEIF support with: pip install 'blipcap[heif]'"


@dataclass(frozen=True)
class ImageLimits:
    """Ceilings applied to every input before and during decoding.

    ``max_pixels`` counts the pixels of the one frame that is decoded (the first
    frame of an animation, the first page of a TIFF); other frames are never
    read. Pillow's own bomb ceiling (``Image.MAX_IMAGE_PIXELS``, about 89 MP)
    also applies, so raising ``max_pixels`` above it has no effect.
    """

    max_bytes: int = 50 * 2**20
    max_pixels: int = 50_000_000

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0:
            raise ValueError("ImageLimits.max_bytes and max_pixels must be positive")


DEFAULT_LIMITS = ImageLimits()

# Exceptions Pillow's own fuzz harness tolerates from hostile files, plus the
# few more that plugins have leaked on corrupt input. Anything else is a bug.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    MemoryError,
    ValueError,
    NotImplementedError,
    OverflowError,
    struct.error,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    ZeroDivisionError,
)

# warnings.catch_warnings swaps process-wide state; serialize our use of it so
# concurrent decodes cannot leave the "error" filter installed. Only the header
# parse runs under the lock; pixel decoding does not.
_OPEN_LOCK = threading.Lock()
_HEIF_LOCK = threading.Lock()
_heif_state: str | None = None  # None: not tried yet; "": registered; else why HEIF is off
# libheif CVE-2025-68431 (overlay-box out-of-bounds access) is fixed in 1.21.0.
MIN_LIBHEIF = (1, 21, 0)

# ISO-BMFF brands (the 'ftyp' box) of HEIF-family files.
_HEIF_BRANDS = frozenset(b"heic heix hevc hevx heim heis hevm hevs mif1 msf1 mif2".split())
_AVIF_BRANDS = frozenset((b"avif", b"avis"))


# --------------------------------------------------------------------------- bytes


def read_capped(fp: IO[bytes], max_bytes: int, name: str) -> bytes:
    """Read all of ``fp`` but never more than ``max_bytes + 1`` bytes.

    Raises :class:`ImageTooLargeError` as soon as the stream proves longer than
    ``max_bytes``, so an endless or huge stream is never buffered.
    """
    chunks: list[bytes] = []
    total = 0
    while total <= max_bytes:
        chunk = fp.read(min(1 << 20, max_bytes + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > max_bytes:
        raise ImageTooLargeError(
            f"{name}: larger than the {_fmt_bytes(max_bytes)} limit. "
            "Use a smaller file, or raise ImageLimits.max_bytes if you trust the source."
        )
    return b"".join(chunks)


def _read_source(source: Any, limits: ImageLimits, name: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > limits.max_bytes:
            raise ImageTooLargeError(
                f"{name}: {_fmt_bytes(len(data))} is larger than the {_fmt_bytes(limits.max_bytes)} "
                "limit. Use a smaller file, or raise ImageLimits.max_bytes if you trust the source."
            )
        return data
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            if path.is_dir():
                raise InputError(
                    f"{name}: is a directory, not an image file. Pass the files in it, or use expand_inputs()."
                )
            size = path.stat().st_size
            if size > limits.max_bytes:  # fail fast; read_capped still guards growing files/FIFOs
                raise ImageTooLargeError(
                    f"{name}: {_fmt_bytes(size)} is larger than the {_fmt_bytes(limits.max_bytes)} "
                    "limit. Use a smaller file, or raise ImageLimits.max_bytes if you trust the source."
                )
            with open(path, "rb") as fp:
                return read_capped(fp, limits.max_bytes, name)
        except FileNotFoundError:
            raise InputError(
                f"{name}: no such file. Check the path and that the file still exists."
            ) from None
        except PermissionError:
            raise InputError(
                f"{name}: permission denied. Make the file readable (chmod +r) or run as its owner."
            ) from None
        except IsADirectoryError:
            raise InputError(f"{name}: is a directory, not an image file.") from None
        except OSError as exc:
            raise InputError(f"{name}: cannot read the file ({exc.strerror or exc}).") from None
    if hasattr(source, "read"):
        try:
            return read_capped(source, limits.max_bytes, name)
        except OSError as exc:
            raise InputError(f"{name}: cannot read the stream ({exc}).") from None
    raise TypeError(
        f"load_image() takes a path, bytes, a binary file object or a PIL image, not {type(source).__name__}"
    )


# --------------------------------------------------------------------------- formats


def _heif_status() -> str:
    """Register pillow-heif's opener on first use. "" when HEIF decoding is on, else why it is off."""
    global _heif_state
    with _HEIF_LOCK:
        if _heif_state is None:
            try:
                import pillow_heif
            except ImportError:
                _heif_state = f"it needs pillow-heif; {HEIF_HINT}"
            else:
                version = str(pillow_heif.libheif_version())
                if _version_tuple(version) < MIN_LIBHEIF:
                    fixed = ".".join(map(str, MIN_LIBHEIF))
                    _heif_state = (
                        f"the installed pillow-heif uses libheif {version}, which has known memory-safety "
                        f"bugs (fixed in {fixed}); upgrade it with: pip install -U pillow-heif"
                    )
                else:
                    pillow_heif.register_heif_opener()
                    _heif_state = ""
        return _heif_state


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def _avif_available() -> bool:
    Image.init()
    return "AVIF" in Image.OPEN


def allowed_formats(*, load_heif: bool = False) -> tuple[str, ...]:
    """The Pillow format names :func:`load_image` decodes in this environment."""
    formats = list(ALLOWED_FORMATS)
    if _avif_available():
        formats.append("AVIF")
    if (load_heif and _heif_status() == "") or _heif_state == "":
        formats.append("HEIF")
    return tuple(formats)


def _ftyp_brands(data: bytes) -> set[bytes]:
    """Major and compatible brands of an ISO-BMFF 'ftyp' box at the start, or an empty set."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return set()
    box_len = min(struct.unpack(">I", data[:4])[0], len(data), 256)
    brands = {data[8:12]}
    brands.update(data[i : i + 4] for i in range(16, box_len - 3, 4))
    return brands


def _sniff(data: bytes) -> tuple[str, str]:
    """Name what ``data`` looks like without running any decoder: (kind, description).

    kind is "image" (a Pillow format name in description), "heif", "avif",
    "document" or "unknown".
    """
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n\f\v").lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head[:512]:
        return "document", "an HTML page"
    if b"<svg" in head:
        return "document", "an SVG drawing (vector graphics; rasterize it to PNG first)"
    if head.startswith(b"<?xml"):
        return "document", "an XML document"
    if data.startswith(b"%PDF-"):
        return "document", "a PDF document (for scans and PDFs use `blipcap document`)"
    brands = _ftyp_brands(data)
    if brands & _AVIF_BRANDS:
        return "avif", "AVIF"
    if brands & _HEIF_BRANDS:
        return "heif", "HEIF"
    if data[-18:] == b"TRUEVISION-XFILE.\x00":  # TGA 2.0 footer; TGA has no magic at the start
        return "image", "TGA"
    Image.init()
    prefix = data[:16]
    for fmt in Image.ID:
        _factory, accept = Image.OPEN[fmt]
        try:
            if accept is not None and accept(prefix):
                return "image", fmt
        except Exception:  # an accept() that chokes on odd bytes just does not match
            continue
    if head.startswith((b"{", b"[")):
        return "document", "a JSON document"
    sample = data[:512]
    if sample and sum(32 <= b < 127 or b in b"\t\r\n" for b in sample) / len(sample) > 0.95:
        return "document", "a text file"
    return "unknown", f"unrecognized bytes (starting {data[:8].hex(' ')})"


def _refuse_unidentified(data: bytes, name: str, allowed: tuple[str, ...]) -> InputError:
    allowed_txt = ", ".join(allowed)
    kind, what = _sniff(data)
    if kind == "heif":
        why = _heif_status()
        if not why:
            return CorruptImageError(
                f"{name}: looks like HEIF but its header is damaged. Re-download or re-export the file."
            )
        return UnsupportedFormatError(f"{name}: is a HEIF/HEIC image, but {why}")
    if kind == "avif":
        return UnsupportedFormatError(
            f"{name}: is an AVIF image, which this Pillow build cannot decode; "
            "upgrade Pillow (its wheels include AVIF since 11.3) or convert the file to PNG/JPEG."
        )
    if kind == "image" and what in allowed:
        return CorruptImageError(
            f"{name}: looks like {what} but its header is damaged. Re-download or re-export the file."
        )
    if kind == "image":
        return UnsupportedFormatError(
            f"{name}: is in {what} format, which blipcap refuses for safety. "
            f"Allowed formats: {allowed_txt}. Convert it (e.g. to PNG) and try again."
        )
    return UnsupportedFormatError(
        f"{name}: not an image: it looks like {what}. Allowed formats: {allowed_txt}."
    )


# --------------------------------------------------------------------------- decode


def load_image(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | Image.Image,
    limits: ImageLimits = DEFAULT_LIMITS,
    *,
    name: str | None = None,
) -> Image.Image:
    """Decode ``source`` safely and return an upright RGB image.

    ``source`` is a local path, the image bytes, a binary file object or a PIL
    image. ``name`` labels the input in error messages (default: the path, or
    ``<bytes>``/``<stream>``/``<image>``). Raises :class:`InputError` or one of
    its subclasses (:class:`UnsupportedFormatError`, :class:`ImageTooLargeError`,
    :class:`CorruptImageError`) for anything that is not a usable image.
    The result carries no metadata (EXIF/XMP/ICC are dropped: they are
    untrusted and the model does not use them).
    """
    if isinstance(source, Image.Image):
        label = name or getattr(source, "filename", None) or "<image>"
        return _finish(source, limits, str(label))
    if name is None:
        if isinstance(source, (str, os.PathLike)):
            name = os.fspath(source)
        elif isinstance(source, (bytes, bytearray, memoryview)):
            name = "<bytes>"
        else:
            name = str(getattr(source, "name", None) or "<stream>")
    data = _read_source(source, limits, name)
    if not data:
        raise CorruptImageError(
            f"{name}: empty (0 bytes). The file was not fully written or downloaded; get it again."
        )
    brands = _ftyp_brands(data)
    allowed = allowed_formats(load_heif=bool(brands & _HEIF_BRANDS and not brands & _AVIF_BRANDS))
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            # A bomb warning is an error for us; scoped to this block only.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=allowed)
    except Image.UnidentifiedImageError:
        raise _refuse_unidentified(data, name, allowed) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{name}: refused as a decompression bomb ({exc}).") from None
    except _DECODE_ERRORS as exc:
        raise _corrupt(name, exc) from None
    try:
        return _finish(im, limits, name)
    finally:
        im.close()


def _finish(im: Image.Image, limits: ImageLimits, name: str) -> Image.Image:
    """Check size, decode frame 0, apply EXIF orientation and convert to RGB."""
    width, height = im.size
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} pixels ({width * height / 1e6:.1f} MP) is over the "
            f"{limits.max_pixels / 1e6:g} MP limit. Downscale it first, or raise ImageLimits.max_pixels."
        )
    try:
        im.load()  # the full pixel decode happens here, inside the guard
        orientation = _orientation(im)
        if orientation in range(2, 9):
            im = ImageOps.exif_transpose(im)
        rgb = to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{name}: refused as a decompression bomb ({exc}).") from None
    except _DECODE_ERRORS as exc:
        raise _corrupt(name, exc) from None
    rgb.info = {}
    return rgb


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(ExifTags.Base.Orientation, 1))
    except _DECODE_ERRORS:
        return 1  # unreadable EXIF: the pixels are still fine, keep them as stored


def _corrupt(name: str, exc: BaseException) -> CorruptImageError:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, MemoryError):
        return CorruptImageError(
            f"{name}: ran out of memory while decoding; the file is corrupt or hostile."
        )
    if "truncated" in detail.lower():
        return CorruptImageError(
            f"{name}: the image is truncated ({detail}). Re-download or re-export the file."
        )
    return CorruptImageError(
        f"{name}: cannot decode the image ({type(exc).__name__}: {detail}). "
        "The file is damaged; re-download or re-export it."
    )


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without clipping or garbage.

    Transparency is composited on white (the colour most transparent web images
    are designed for); 16-bit and 32-bit integer images are scaled, not clipped;
    float images are scaled by their value range.
    """
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_to_uint8(im), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        if mode == "La":
            im = im.convert("LA")  # Pillow has no direct La -> RGBA conversion
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB")


def _to_uint8(im: Image.Image) -> np.ndarray:
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        return np.rint(arr.astype(np.float32) / 257.0).astype(np.uint8)  # 65535 -> 255
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
        scaled = arr * 255.0  # normalized float data
    elif lo >= 0.0 and hi <= 255.0:
        scaled = arr  # already 8-bit values
    elif im.mode == "I" and lo >= 0.0 and hi <= 65535.0:
        scaled = arr / 257.0  # 16-bit data widened to 32 bits
    else:
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{int(n)} bytes"


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ImageInput:
    """One item to caption, as produced by :func:`expand_inputs`.

    ``label`` is what results show as the item's path; ``kind`` says how
    :func:`load_input` reads ``payload``:

    ========  ==============================================================
    file      payload is a :class:`~pathlib.Path`
    url       payload is the URL string (fetched with :func:`blipcap.fetch.fetch_url`)
    stdin     the bytes of standard input (the input ``-``)
    bytes     payload is the image bytes
    stream    payload is a binary file object
    image     payload is a PIL image
    error     payload is the :class:`InputError` the item fails with
    ========  ==============================================================
    """

    label: str
    kind: str
    payload: Any = None


_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB_RE = re.compile(r"[*?[]")


def expand_inputs(
    inputs: Iterable[Any] | str | os.PathLike[str], recursive: bool = True
) -> Iterator[ImageInput]:
    """Turn user inputs into :class:`ImageInput` items, lazily and in a stable order.

    Accepts paths (str or :class:`~pathlib.Path`), directories (walked in sorted
    order, recursively unless ``recursive=False``; hidden files and folders and
    files without an image extension are skipped; symlinked folders are not
    followed), glob patterns (``"photos/**/*.jpg"``, matches sorted), ``"-"``
    (standard input), URLs, bytes, binary file objects and PIL images.

    Nothing is dropped silently: a missing path, a pattern that matches nothing
    or a folder without images becomes an ``error`` item that fails when loaded,
    so it is reported next to the others instead of stopping the run.
    """
    if isinstance(inputs, (str, bytes, bytearray, memoryview, os.PathLike, Image.Image)):
        inputs = [inputs]
    for index, item in enumerate(inputs):
        if isinstance(item, Image.Image):
            yield ImageInput(f"<image #{index}>", "image", item)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            yield ImageInput(f"<bytes #{index}>", "bytes", item)
        elif isinstance(item, str) and item == "-":
            yield ImageInput("-", "stdin")
        elif isinstance(item, str) and _URL_RE.match(item):
            yield ImageInput(item, "url", item)
        elif isinstance(item, (str, os.PathLike)):
            yield from _expand_path(item, recursive)
        elif hasattr(item, "read"):
            label = getattr(item, "name", None)
            yield ImageInput(
                label if isinstance(label, str) else f"<stream #{index}>", "stream", item
            )
        else:
            raise TypeError(
                f"input #{index} is a {type(item).__name__}; pass a path, glob, URL, '-', bytes, "
                "a binary file object or a PIL image"
            )


def _has_image_extension(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _expand_path(item: str | os.PathLike[str], recursive: bool) -> Iterator[ImageInput]:
    label = os.path.expanduser(os.fspath(item))
    if os.path.isdir(label):
        found = False
        for entry in _walk(label, recursive):
            found = True
            yield entry
        if not found:
            where = "" if recursive else ", not looking in subfolders"
            yield _error(
                label,
                f"{label}: no image files in this folder (looked for "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))}{where}).",
            )
    elif os.path.lexists(label):
        yield ImageInput(label, "file", Path(label))
    elif isinstance(item, str) and _GLOB_RE.search(label):
        found = False
        for match in sorted(glob.glob(label, recursive=True)):
            if os.path.isdir(match):
                for entry in _walk(match, recursive):
                    found = True
                    yield entry
            elif _has_image_extension(match):
                found = True
                yield ImageInput(match, "file", Path(match))
        if not found:
            yield _error(
                label,
                f"{label}: no image files match this pattern. Check the pattern and the folder.",
            )
    else:
        yield _error(label, f"{label}: no such file or directory. Check the path.")


def _walk(top: str, recursive: bool) -> Iterator[ImageInput]:
    # Entries in name order, descending into each folder where it sorts: the
    # same order as sorting the whole tree by path components, but lazy, so a
    # huge tree starts producing items at once.
    try:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield _error(
            top, f"{top}: cannot list this folder ({exc.strerror or exc}). Check its permissions."
        )
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = os.path.join(top, entry.name)
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            if recursive:
                yield from _walk(path, recursive)
        elif _has_image_extension(entry.name):
            # A broken symlink is kept: it fails at load with "no such file" instead of vanishing.
            yield ImageInput(path, "file", Path(path))


def _error(label: str, message: str) -> ImageInput:
    return ImageInput(label, "error", InputError(message))


def load_input(
    item: ImageInput,
    limits: ImageLimits = DEFAULT_LIMITS,
    fetcher: Callable[[str], Any] | None = None,
) -> Image.Image:
    """Load one :class:`ImageInput` as an upright RGB image, or raise :class:`InputError`.

    ``fetcher(url)`` downloads URL items and returns bytes or a
    :class:`~blipcap.fetch.FetchResult`; the default is
    :func:`blipcap.fetch.fetch_url` with the SSRF protections on and the byte
    cap of ``limits``.
    """
    kind, payload = item.kind, item.payload
    if kind == "error":
        raise payload
    if kind == "url":
        if fetcher is None:
            from .fetch import fetch_url

            result = fetch_url(payload, max_bytes=limits.max_bytes)
        else:
            result = fetcher(payload)
        return load_image(getattr(result, "data", result), limits, name=item.label)
    if kind == "stdin":
        return load_image(sys.stdin.buffer, limits, name="<stdin>")
    if kind in ("file", "bytes", "stream", "image"):
        return load_image(payload, limits, name=item.label)
    raise ValueError(f"unknown ImageInput kind {kind!r}")


_T = TypeVar("_T")


def decode_ahead(
    prepare: Callable[[Any], _T], sources: Iterable[Any], *, workers: int, window: int, name: str
) -> Iterator[_T]:
    """``prepare`` each source in ``workers`` threads, at most ``window`` ahead, in input order.

    The window bounds memory (decoded images waiting for the model) and keeps
    the output order equal to the input order whatever order the threads finish in.
    """
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        pending: deque[Future[_T]] = deque()
        for source in sources:
            pending.append(pool.submit(prepare, source))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
