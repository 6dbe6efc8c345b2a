"""Safe image loading: byte, pixel, memory and work limits, a format allow-list, EXIF, RGB.

Every image that reaches the model goes through :func:`load_image`. Untrusted
bytes meet only the decoders on the allow-list (JPEG, PNG, WebP, GIF, BMP, TIFF,
plus HEIF/AVIF where available); formats with a history of decompression-bomb
bypasses or code execution (EPS runs Ghostscript; FITS, GD, SPIDER, PSD, PDF)
are refused by name before any of their parsers runs. Structures that Pillow
walks in Python (JPEG markers, PNG chunks, TIFF strips) and the scans of a
progressive JPEG are counted before Pillow sees them; sizes and the memory a
decode will need are checked from the header before pixels are decoded; every
decode holds its share of a process-wide memory budget; a :class:`CancelToken`
stops a decode that outlived its request. Only the first frame of an animation
or multi-page file is ever decoded, and every failure becomes an
:class:`~blipcap.errors.InputError` subclass that names the input and the fix,
so a batch reports the item and carries on.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
from PIL import ExifTags, Image, ImageOps

from .errors import (
    CorruptImageError,
    DecodeBusyError,
    DecodeCancelledError,
    ImageTooLargeError,
)
from .image_guard import (
    ALLOWED_FORMATS,
    allowed_formats,
    check_scans,
    check_structure,
    is_heif,
    refuse_unidentified,
)

# Re-exported: the input half of this module moved to blipcap.inputs, and code
# outside the engine (the CLI, the index, documents, alt text) still imports these here.
from .inputs import (
    IMAGE_EXTENSIONS,
    ImageInput,
    expand_inputs,
    format_bytes,
    format_size,
    is_url,
    open_regular_file,
    read_capped,
    read_source,
)

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_DECODE_MEMORY",
    "DEFAULT_LIMITS",
    "IMAGE_EXTENSIONS",
    "CancelToken",
    "ImageInput",
    "ImageLimits",
    "allowed_formats",
    "decode_memory_budget",
    "expand_inputs",
    "load_image",
    "load_input",
    "load_source",
    "open_regular_file",
    "read_capped",
    "set_decode_memory_budget",
    "to_rgb",
]


@dataclass(frozen=True)
class ImageLimits:
    """Ceilings applied to every input before and during decoding.

    ``max_pixels`` counts the pixels of the one frame that is decoded (the first
    frame of an animation, the first page of a TIFF); other frames are never
    read. Pillow's own bomb ceiling (``Image.MAX_IMAGE_PIXELS``, about 89 MP)
    also applies, so raising ``max_pixels`` above it has no effect.

    ``max_decode_bytes`` bounds the memory one decode may need at its peak,
    estimated from the header (pixels x the bytes per pixel of the mode, plus
    the conversion to RGB); a 32-bit image costs four times an 8-bit one.

    ``max_jpeg_scans`` and ``max_jpeg_scan_pixels`` bound the work of a
    progressive JPEG: every scan is a pass over the whole image, so a file of a
    few hundred KB that repeats one scan thousands of times takes minutes.
    Ordinary progressive JPEGs have about 10 scans.
    """

    max_bytes: int = 50 * 2**20
    max_pixels: int = 50_000_000
    max_decode_bytes: int = 2**30
    max_jpeg_scans: int = 100
    max_jpeg_scan_pixels: int = 1_000_000_000

    def __post_init__(self) -> None:
        for field, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"ImageLimits.{field} must be positive, not {value}")


DEFAULT_LIMITS = ImageLimits()

# The process-wide decode-memory budget (see set_decode_memory_budget) and how
# long a decode without a deadline waits for its share before giving up.
DEFAULT_DECODE_MEMORY = 2 * 2**30
DECODE_MEMORY_WAIT_S = 30.0

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


# --------------------------------------------------------------------------- cancellation


class CancelToken:
    """Stops a decode that has outlived its request.

    :func:`load_image` checks the token before reading, before the header is
    parsed, while it waits for decode memory, between the blocks the decoder
    reads, and before the conversion to RGB; once :meth:`cancel` was called or
    ``deadline`` (a :func:`time.monotonic` value) has passed, the decode stops
    with :class:`~blipcap.errors.DecodeCancelledError` and frees its memory.
    """

    def __init__(self, deadline: float | None = None):
        self.deadline = deadline
        self._cancelled = threading.Event()

    @classmethod
    def after(cls, seconds: float) -> CancelToken:
        """A token whose deadline is ``seconds`` from now."""
        return cls(time.monotonic() + seconds)

    def cancel(self) -> None:
        """Stop the decode at its next check (thread-safe)."""
        self._cancelled.set()

    def remaining(self) -> float | None:
        """Seconds left before the deadline, or None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    @property
    def cancelled(self) -> bool:
        """Whether the decode must stop: cancelled, or past the deadline."""
        remaining = self.remaining()
        return self._cancelled.is_set() or (remaining is not None and remaining <= 0)

    def check(self, name: str) -> None:
        """Raise :class:`DecodeCancelledError` if the decode of ``name`` must stop."""
        if self._cancelled.is_set():
            raise DecodeCancelledError(f"{name}: decoding was cancelled (its request ended).")
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            raise DecodeCancelledError(
                f"{name}: decoding stopped at its deadline. Send a smaller or simpler image "
                "(e.g. re-saved as a baseline JPEG or 8-bit PNG), or allow more time."
            )


_NEVER = CancelToken()  # the token of callers that pass none: never cancelled


class _CancellableBytes(io.BytesIO):
    """The image bytes, checking a :class:`CancelToken` on every read.

    Pillow feeds most decoders in 64 KiB blocks, so a cancelled decode stops
    within a block instead of running to the end.
    """

    def __init__(self, data: bytes, cancel: CancelToken, name: str):
        super().__init__(data)
        self._cancel = cancel
        self._name = name

    def read(self, size: int | None = -1) -> bytes:
        self._cancel.check(self._name)
        return super().read(size)


# --------------------------------------------------------------------------- decode memory


class _DecodeMemory:
    """A process-wide byte budget that concurrent decodes reserve their peak memory from."""

    def __init__(self, total: int):
        self.total = total
        self.held = 0
        self._changed = threading.Condition()

    def resize(self, total: int) -> int:
        with self._changed:
            previous, self.total = self.total, total
            self._changed.notify_all()
        return previous

    @contextmanager
    def reserve(self, nbytes: int, name: str, cancel: CancelToken) -> Iterator[None]:
        """Hold ``nbytes`` of the budget for the duration of the block."""
        self._acquire(nbytes, name, cancel)
        try:
            yield
        finally:
            with self._changed:
                self.held -= nbytes
                self._changed.notify_all()

    def _acquire(self, nbytes: int, name: str, cancel: CancelToken) -> None:
        with self._changed:
            if nbytes > self.total:
                raise ImageTooLargeError(
                    f"{name}: decoding it needs about {format_bytes(nbytes)}, more than the whole "
                    f"decode-memory budget of {format_bytes(self.total)}. Downscale it, or raise the "
                    "budget with blipcap.images.set_decode_memory_budget()."
                )
            remaining = cancel.remaining()
            wait = DECODE_MEMORY_WAIT_S if remaining is None else remaining
            give_up = time.monotonic() + wait
            while self.held + nbytes > self.total:
                left = give_up - time.monotonic()
                if left <= 0:
                    raise DecodeBusyError(
                        f"{name}: waited {wait:.3g} s for decode memory while other images held "
                        f"the process budget of {format_bytes(self.total)}. Try again with fewer "
                        "images in flight, or raise blipcap.images.set_decode_memory_budget()."
                    )
                cancel.check(name)
                self._changed.wait(min(left, 0.05))  # short slices: a cancel is seen quickly
            self.held += nbytes


_DECODE_MEMORY = _DecodeMemory(DEFAULT_DECODE_MEMORY)


def set_decode_memory_budget(nbytes: int) -> int:
    """Set how many bytes all concurrent decodes of this process may hold; return the old value.

    Each decode reserves its estimated peak memory before the pixels are
    decoded and waits (up to its :class:`CancelToken` deadline, else
    ``DECODE_MEMORY_WAIT_S``) while the budget is in use; an image that needs
    more than the whole budget fails at once. The default is 2 GiB.
    """
    if nbytes <= 0:
        raise ValueError(f"the decode-memory budget must be positive, not {nbytes}")
    return _DECODE_MEMORY.resize(int(nbytes))


def decode_memory_budget() -> tuple[int, int]:
    """The decode-memory budget of this process and the bytes held right now: (total, held)."""
    return _DECODE_MEMORY.total, _DECODE_MEMORY.held


# --------------------------------------------------------------------------- decode


def load_image(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | Image.Image,
    limits: ImageLimits = DEFAULT_LIMITS,
    *,
    name: str | None = None,
    cancel: CancelToken | None = None,
) -> Image.Image:
    """Decode ``source`` safely and return an upright RGB image.

    ``source`` is a local path, the image bytes, a binary file object or a PIL
    image. ``name`` labels the input in error messages (default: the path, or
    ``<bytes>``/``<stream>``/``<image>``). ``cancel`` stops the decode once it
    is cancelled or its deadline passes (see :class:`CancelToken`). Raises
    :class:`InputError` or one of its subclasses (:class:`UnsupportedFormatError`,
    :class:`ImageTooLargeError`, :class:`CorruptImageError`,
    :class:`DecodeCancelledError`) for anything that is not a usable image.
    The result carries no metadata (EXIF/XMP/ICC are dropped: they are
    untrusted and the model does not use them).
    """
    cancel = cancel or _NEVER
    if isinstance(source, Image.Image):
        label = name or getattr(source, "filename", None) or "<image>"
        return _finish(source, limits, str(label), cancel)
    if name is None:
        if isinstance(source, (str, os.PathLike)):
            name = os.fspath(source)
        elif isinstance(source, (bytes, bytearray, memoryview)):
            name = "<bytes>"
        else:
            name = str(getattr(source, "name", None) or "<stream>")
    cancel.check(name)
    data = read_source(source, limits.max_bytes, name)
    if not data:
        raise CorruptImageError(
            f"{name}: empty (0 bytes). The file was not fully written or downloaded; get it again."
        )
    scans = check_structure(data, name)
    allowed = allowed_formats(load_heif=is_heif(data))
    cancel.check(name)
    try:
        im = _open(_CancellableBytes(data, cancel, name), allowed)
    except Image.UnidentifiedImageError:
        raise refuse_unidentified(data, name, allowed) from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{name}: refused as a decompression bomb ({exc}).") from None
    except _DECODE_ERRORS as exc:
        raise _corrupt(name, exc) from None
    try:
        if scans:
            check_scans(scans, im.size, limits, name)
        return _finish(im, limits, name, cancel)
    finally:
        im.close()


def _open(fp: IO[bytes], allowed: tuple[str, ...]) -> Image.Image:
    """What ``Image.open(fp, formats=allowed)`` does, without its decompression-bomb warning.

    The warning is process-wide state (turning it into an error needs
    ``warnings.catch_warnings``, which is not thread-safe); :func:`_check_pixels`
    applies the same ceiling as an error instead, so concurrent decodes need no lock.
    """
    Image.init()
    prefix = fp.read(16)
    for fmt in allowed:
        factory, accept = Image.OPEN.get(fmt, (None, None))
        if factory is None or (accept is not None and accept(prefix) is not True):
            continue
        try:
            fp.seek(0)
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue  # not this format after all; as Image.open, try the next
    raise Image.UnidentifiedImageError("cannot identify image file")


def _check_pixels(im: Image.Image, limits: ImageLimits, name: str) -> int:
    """Refuse too many pixels or too much decode memory, from the header; return the bytes
    the decode needs."""
    width, height = im.size
    pixels = width * height
    bomb = Image.MAX_IMAGE_PIXELS
    if bomb is not None and pixels > bomb:
        raise ImageTooLargeError(
            f"{name}: refused as a decompression bomb ({width}x{height} = {pixels} pixels is over "
            f"Pillow's limit of {bomb} pixels). Downscale it first."
        )
    if pixels > limits.max_pixels:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} pixels ({pixels / 1e6:.1f} MP) is over the "
            f"{limits.max_pixels / 1e6:g} MP limit. Downscale it first, or raise ImageLimits.max_pixels."
        )
    needed = _decode_bytes(pixels, im.mode)
    if needed > limits.max_decode_bytes:
        raise ImageTooLargeError(
            f"{name}: decoding its {width}x{height} {im.mode} pixels needs about "
            f"{format_size(needed, limits.max_decode_bytes)}, over the "
            f"{format_size(limits.max_decode_bytes, needed)} per-image limit. Downscale it or save "
            "it with 8 bits per channel, or raise ImageLimits.max_decode_bytes."
        )
    return needed


def _decode_bytes(pixels: int, mode: str) -> int:
    """The peak memory of decoding one frame: the decoded pixels, an EXIF-rotated copy of
    them, and the buffers of the conversion to RGB (Pillow stores RGB in 4 bytes a pixel)."""
    if mode in ("1", "L", "P"):
        stored = 1
    elif mode.startswith("I;16"):
        stored = 2
    else:
        stored = 4
    return pixels * (2 * stored + 8)


def _finish(im: Image.Image, limits: ImageLimits, name: str, cancel: CancelToken) -> Image.Image:
    """Check size and memory, decode frame 0, apply EXIF orientation and convert to RGB."""
    needed = _check_pixels(im, limits, name)
    with _DECODE_MEMORY.reserve(needed, name, cancel):
        cancel.check(name)
        try:
            im.load()  # the full pixel decode happens here, inside the guard
            cancel.check(name)
            orientation = _orientation(im)
            if orientation in range(2, 9):
                im = ImageOps.exif_transpose(im)
            rgb = to_rgb(im)
        except Image.DecompressionBombError as exc:
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


# Rows of deep images are converted this many pixels at a time, so the float32
# working copy stays about 1 MB whatever the image size.
_CHUNK_PIXELS = 1 << 18


def _row_chunks(im: Image.Image) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float32 pixels) of ``im`` in bands of about ``_CHUNK_PIXELS``; NaN/inf -> 0."""
    width, height = im.size
    rows = max(1, _CHUNK_PIXELS // max(1, width))
    for top in range(0, height, rows):
        band = np.asarray(im.crop((0, top, width, min(top + rows, height))), dtype=np.float32)
        if im.mode == "F":
            band = np.nan_to_num(band, nan=0.0, posinf=0.0, neginf=0.0)
        yield top, band


def _value_range(im: Image.Image) -> tuple[float, float]:
    lo, hi = np.inf, -np.inf
    for _, band in _row_chunks(im):
        if band.size:
            lo, hi = min(lo, float(band.min())), max(hi, float(band.max()))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


def _to_uint8(im: Image.Image) -> np.ndarray:
    """A 16/32-bit or float image as 8-bit grey, band by band (no full-size float copy)."""
    if im.mode.startswith("I;16"):
        scale, offset = 1 / 257.0, 0.0  # 65535 -> 255
    else:
        lo, hi = _value_range(im)
        if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
            scale, offset = 255.0, 0.0  # normalized float data
        elif lo >= 0.0 and hi <= 255.0:
            scale, offset = 1.0, 0.0  # already 8-bit values
        elif im.mode == "I" and lo >= 0.0 and hi <= 65535.0:
            scale, offset = 1 / 257.0, 0.0  # 16-bit data widened to 32 bits
        elif hi > lo:
            scale, offset = 255.0 / (hi - lo), lo
        else:
            scale, offset = 0.0, lo
    out = np.empty((im.height, im.width), dtype=np.uint8)
    for top, band in _row_chunks(im):
        band -= np.float32(offset)  # in place: no temporaries the size of the band
        band *= np.float32(scale)
        np.clip(np.rint(band, out=band), 0, 255, out=band)
        out[top : top + band.shape[0]] = band
    return out


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


def load_source(source: Any, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Decode any one input safely to an upright RGB image, fetching URLs SSRF-safely.

    ``source``: an :class:`ImageInput`, an http(s) URL, a path, bytes, a binary
    stream or a PIL image. Raises :class:`~blipcap.errors.InputError` for
    anything that is not a usable image.
    """
    if isinstance(source, ImageInput):
        return load_input(source, limits)
    if is_url(source):
        from .fetch import fetch_url

        data = fetch_url(source, max_bytes=limits.max_bytes).data
        return load_image(data, limits, name=source)
    return load_image(source, limits)
