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

import glob
import io
import os
import re
import stat
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
from PIL import ExifTags, Image, ImageOps

from .errors import (
    CorruptImageError,
    DecodeBusyError,
    DecodeCancelledError,
    ImageTooLargeError,
    InputError,
    UnsupportedFormatError,
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
    "open_regular_file",
    "read_capped",
    "set_decode_memory_budget",
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

# Pillow walks these structures one step at a time in Python; real files stay
# far below the caps, hostile ones (a 24 MB file of comment markers) do not.
MAX_JPEG_HEADER_MARKERS = 1000  # segments before the first scan (APPn, COM, DQT, DHT, SOF, ...)
MAX_JPEG_HEADER_JUNK = 4096  # fill or junk bytes between those segments
MAX_PNG_CHUNKS = 50_000  # chunks up to IEND (an 8 KiB IDAT per chunk is common)
MAX_TIFF_STRIPS = 200_000  # strips or tiles of the first page (256x256 tiles: 763 for 50 MP)

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

_HEIF_LOCK = threading.Lock()
_heif_state: str | None = None  # None: not tried yet; "": registered; else why HEIF is off
# libheif CVE-2025-68431 (overlay-box out-of-bounds access) is fixed in 1.21.0.
MIN_LIBHEIF = (1, 21, 0)

# ISO-BMFF brands (the 'ftyp' box) of HEIF-family files.
_HEIF_BRANDS = frozenset(b"heic heix hevc hevx heim heis hevm hevs mif1 msf1 mif2".split())
_AVIF_BRANDS = frozenset((b"avif", b"avis"))


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
                    f"{name}: decoding it needs about {_fmt_bytes(nbytes)}, more than the whole "
                    f"decode-memory budget of {_fmt_bytes(self.total)}. Downscale it, or raise the "
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
                        f"the process budget of {_fmt_bytes(self.total)}. Try again with fewer "
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


def return_large_frees_to_the_os(threshold: int = 1 << 20) -> bool:
    """Have the C allocator hand blocks of ``threshold`` bytes or more back to the OS when freed.

    glibc serves allocations below a threshold that grows with use (up to
    32 MiB) from per-thread arenas and keeps what is freed there; a service
    whose worker threads decode large images then holds several gigabytes of
    freed memory (measured: 16 threads decoding 7000x7000 images peaked at
    3.1 GB more than the process's baseline, 0.8 GB with a fixed 1 MiB
    threshold), which the decode-memory budget cannot see. Fixing the
    threshold keeps the process's memory close to what the budget counts.
    Returns whether it took effect (glibc only; elsewhere nothing changes).
    """
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, int(threshold)))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


def decode_memory_budget() -> tuple[int, int]:
    """The decode-memory budget of this process and the bytes held right now: (total, held)."""
    return _DECODE_MEMORY.total, _DECODE_MEMORY.held


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


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # POSIX; Windows has no FIFOs to fear


def _check_regular(mode: int, name: str) -> None:
    """Refuse anything but a regular file: reading a FIFO or a device can block forever."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise InputError(
            f"{name}: is a directory, not an image file. Pass the files in it, or use expand_inputs()."
        )
    what = next((kind for test, kind in _SPECIAL_FILES if test(mode)), "not a regular file")
    raise InputError(
        f"{name}: is {what}, not a regular file; images are read only from regular files. "
        "Save the image to a file and pass that path."
    )


def open_regular_file(path: str | os.PathLike[str], name: str | None = None) -> IO[bytes]:
    """Open ``path`` for binary reading if it is a regular file, else raise :class:`InputError`.

    FIFOs, sockets and devices are refused without being read: a FIFO named
    ``photo.jpg`` would otherwise block the reader forever. The file is opened
    with ``O_NONBLOCK`` (so even a FIFO swapped in after the first check cannot
    block the open) and checked again on the open descriptor. OSErrors of the
    open itself (missing file, no permission) propagate.
    """
    label = os.fspath(path) if name is None else name
    _check_regular(os.stat(path).st_mode, label)
    fd = os.open(path, os.O_RDONLY | _O_NONBLOCK | getattr(os, "O_BINARY", 0))
    try:
        _check_regular(os.fstat(fd).st_mode, label)
        if _O_NONBLOCK:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _too_many_bytes(name: str, size: int, max_bytes: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"{name}: {_fmt_size(size, max_bytes)} is larger than the {_fmt_size(max_bytes, size)} "
        "limit. Use a smaller file, or raise ImageLimits.max_bytes if you trust the source."
    )


def _read_source(source: Any, limits: ImageLimits, name: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > limits.max_bytes:
            raise _too_many_bytes(name, len(data), limits.max_bytes)
        return data
    if isinstance(source, (str, os.PathLike)):
        try:
            with open_regular_file(source, name) as fp:
                size = os.fstat(fp.fileno()).st_size
                if size > limits.max_bytes:  # fail fast; read_capped still guards growing files
                    raise _too_many_bytes(name, size, limits.max_bytes)
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


# --------------------------------------------------------------------------- structure


_JPEG_MARKER = re.compile(rb"\xff[^\x00\xff]")
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})  # TEM, RSTn, SOI, EOI: no length


def _jpeg_scans(data: bytes, name: str) -> int:
    """The number of scans of a JPEG (an upper bound), refusing marker floods first.

    Pillow parses the segments before the first scan in Python, one marker and
    one junk byte at a time, so their number is capped here, where each step is
    a C-speed regex search. From the first scan on, entropy-coded data stuffs
    every 0xFF data byte as FF 00 and carries no markers but RSTn, so every
    FF DA is a scan header or sits in another segment's payload: counting FF DA
    never misses a scan and may only overcount.
    """
    pos, markers, junk = 2, 0, 0
    while (found := _JPEG_MARKER.search(data, pos)) is not None:
        junk += found.start() - pos
        markers += 1
        if markers > MAX_JPEG_HEADER_MARKERS or junk > MAX_JPEG_HEADER_JUNK:
            raise CorruptImageError(
                f"{name}: over {MAX_JPEG_HEADER_MARKERS} markers or {MAX_JPEG_HEADER_JUNK} junk "
                "bytes before the JPEG's image data (a photo has a few dozen); refused as hostile. "
                "Re-save the image with an image editor to clean it."
            )
        marker, pos = data[found.start() + 1], found.end()
        if marker == 0xDA:
            return data.count(b"\xff\xda", found.start())
        if marker not in _JPEG_STANDALONE:
            pos += int.from_bytes(data[pos : pos + 2], "big")
    return 0  # no scan at all: Pillow reports the damage


def _check_png_chunks(data: bytes, name: str) -> None:
    """Refuse a PNG with more chunks than Pillow should walk in Python, one by one."""
    pos = 8
    for _ in range(MAX_PNG_CHUNKS):
        if pos + 8 > len(data):
            return
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IEND":
            return
        pos += 12 + length
    if pos + 8 <= len(data):
        raise CorruptImageError(
            f"{name}: over {MAX_PNG_CHUNKS} PNG chunks (a normal PNG has a few dozen); refused as "
            "hostile. Re-save the image with an image editor to clean it."
        )


_TIFF_OFFSET_TAGS = (273, 324)  # StripOffsets, TileOffsets


def _tiff_strips(data: bytes) -> int:
    """The largest strip or tile count the first IFD of a (Big)TIFF declares; 0 if unreadable."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        if struct.unpack_from(order + "H", data, 2)[0] == 43:  # BigTIFF: 8-byte counts
            (ifd,) = struct.unpack_from(order + "Q", data, 8)
            (entries,) = struct.unpack_from(order + "Q", data, ifd)
            first, size, layout = ifd + 8, 20, order + "HHQ"
        else:
            (ifd,) = struct.unpack_from(order + "I", data, 4)
            (entries,) = struct.unpack_from(order + "H", data, ifd)
            first, size, layout = ifd + 2, 12, order + "HHI"
        counts = [0]
        for i in range(min(entries, 65_536)):
            tag, _type, count = struct.unpack_from(layout, data, first + i * size)
            if tag in _TIFF_OFFSET_TAGS:
                counts.append(count)
        return max(counts)
    except struct.error:
        return 0  # damaged: Pillow reports it


def _check_tiff_strips(data: bytes, name: str) -> None:
    """Refuse a TIFF with more strips or tiles than Pillow should list and decode one by one."""
    strips = _tiff_strips(data)
    if strips > MAX_TIFF_STRIPS:
        raise CorruptImageError(
            f"{name}: a TIFF page in {strips} strips or tiles (at most {MAX_TIFF_STRIPS}; a normal "
            "TIFF has a few hundred); refused as hostile. Re-save it with larger strips or tiles."
        )


def _check_structure(data: bytes, name: str) -> int:
    """Bound what Pillow would walk in Python; returns the JPEG scan count (0 for other formats)."""
    if data.startswith(b"\xff\xd8"):
        return _jpeg_scans(data, name)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        _check_png_chunks(data, name)
    elif data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        _check_tiff_strips(data, name)
    return 0


def _check_scans(scans: int, size: tuple[int, int], limits: ImageLimits, name: str) -> None:
    """Every progressive scan is a pass over all pixels: bound their number and their total work."""
    width, height = size
    if scans > limits.max_jpeg_scans or scans * width * height > limits.max_jpeg_scan_pixels:
        raise ImageTooLargeError(
            f"{name}: a JPEG of {width}x{height} pixels in {scans} scans is too much decoding work "
            f"(at most {limits.max_jpeg_scans} scans and {limits.max_jpeg_scan_pixels / 1e6:g} MP "
            "x scans; a normal progressive JPEG has about 10). Re-save it as a baseline JPEG, or "
            "raise ImageLimits.max_jpeg_scans / max_jpeg_scan_pixels if you trust the source."
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
    data = _read_source(source, limits, name)
    if not data:
        raise CorruptImageError(
            f"{name}: empty (0 bytes). The file was not fully written or downloaded; get it again."
        )
    scans = _check_structure(data, name)
    brands = _ftyp_brands(data)
    allowed = allowed_formats(load_heif=bool(brands & _HEIF_BRANDS and not brands & _AVIF_BRANDS))
    cancel.check(name)
    try:
        im = _open(_CancellableBytes(data, cancel, name), allowed)
    except Image.UnidentifiedImageError:
        raise _refuse_unidentified(data, name, allowed) from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{name}: refused as a decompression bomb ({exc}).") from None
    except _DECODE_ERRORS as exc:
        raise _corrupt(name, exc) from None
    try:
        if scans:
            _check_scans(scans, im.size, limits, name)
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
            f"{_fmt_size(needed, limits.max_decode_bytes)}, over the "
            f"{_fmt_size(limits.max_decode_bytes, needed)} per-image limit. Downscale it or save "
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


def _fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{int(n)} bytes"


def _fmt_size(n: int, other: int) -> str:
    """``n`` rounded, or in exact bytes when rounding would make it look equal to ``other``."""
    if n != other and _fmt_bytes(n) == _fmt_bytes(other):
        return f"{n:,} bytes"
    return _fmt_bytes(n)


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
