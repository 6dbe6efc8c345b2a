"""Format guards: what untrusted bytes are, and whether Pillow may walk them, before it does.

Pillow walks some structures one step at a time in Python (JPEG markers, PNG
chunks, TIFF strips) and makes a pass over all pixels per progressive JPEG
scan; hostile files repeat them millions of times. These checks count them
at C speed first. :func:`sniff` names what bytes look like without running
a decoder, for errors that say what the file is; :func:`allowed_formats` is
the decoder allow-list of this environment (HEIF through a safe pillow-heif).
"""

from __future__ import annotations

import re
import struct
import threading
from typing import Any

from PIL import Image

from .errors import CorruptImageError, ImageTooLargeError, InputError, UnsupportedFormatError

# Formats decoded without extra packages. AVIF joins when this Pillow build has
# libavif, HEIF when the optional pillow-heif is installed (see allowed_formats()).
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

HEIF_HINT = "install HEIF support with: pip install 'blipcap[heif]'"

# Pillow walks these structures one step at a time in Python; real files stay
# far below the caps, hostile ones (a 24 MB file of comment markers) do not.
MAX_JPEG_HEADER_MARKERS = 1000  # segments before the first scan (APPn, COM, DQT, DHT, SOF, ...)
MAX_JPEG_HEADER_JUNK = 4096  # fill or junk bytes between those segments
MAX_PNG_CHUNKS = 50_000  # chunks up to IEND (an 8 KiB IDAT per chunk is common)
MAX_TIFF_STRIPS = 200_000  # strips or tiles of the first page (256x256 tiles: 763 for 50 MP)

_HEIF_LOCK = threading.Lock()
_heif_state: str | None = None  # None: not tried yet; "": registered; else why HEIF is off
# libheif CVE-2025-68431 (overlay-box out-of-bounds access) is fixed in 1.21.0.
MIN_LIBHEIF = (1, 21, 0)

# ISO-BMFF brands (the 'ftyp' box) of HEIF-family files.
HEIF_BRANDS = frozenset(b"heic heix hevc hevx heim heis hevm hevs mif1 msf1 mif2".split())
AVIF_BRANDS = frozenset((b"avif", b"avis"))


# -- structure ----------------------------------------------------------------------------


_JPEG_MARKER = re.compile(rb"\xff[^\x00\xff]")
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})  # TEM, RSTn, SOI, EOI: no length


def jpeg_scans(data: bytes, name: str) -> int:
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


def check_png_chunks(data: bytes, name: str) -> None:
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


def tiff_strips(data: bytes) -> int:
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


def _checktiff_strips(data: bytes, name: str) -> None:
    """Refuse a TIFF with more strips or tiles than Pillow should list and decode one by one."""
    strips = tiff_strips(data)
    if strips > MAX_TIFF_STRIPS:
        raise CorruptImageError(
            f"{name}: a TIFF page in {strips} strips or tiles (at most {MAX_TIFF_STRIPS}; a normal "
            "TIFF has a few hundred); refused as hostile. Re-save it with larger strips or tiles."
        )


def check_structure(data: bytes, name: str) -> int:
    """Bound what Pillow would walk in Python; returns the JPEG scan count (0 for other formats)."""
    if data.startswith(b"\xff\xd8"):
        return jpeg_scans(data, name)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        check_png_chunks(data, name)
    elif data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        _checktiff_strips(data, name)
    return 0


def check_scans(scans: int, size: tuple[int, int], limits: Any, name: str) -> None:
    """Every progressive scan is a pass over all pixels: bound their number and their total work."""
    width, height = size
    if scans > limits.max_jpeg_scans or scans * width * height > limits.max_jpeg_scan_pixels:
        raise ImageTooLargeError(
            f"{name}: a JPEG of {width}x{height} pixels in {scans} scans is too much decoding work "
            f"(at most {limits.max_jpeg_scans} scans and {limits.max_jpeg_scan_pixels / 1e6:g} MP "
            "x scans; a normal progressive JPEG has about 10). Re-save it as a baseline JPEG, or "
            "raise ImageLimits.max_jpeg_scans / max_jpeg_scan_pixels if you trust the source."
        )


# -- formats ------------------------------------------------------------------------------


def heif_status() -> str:
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
    if (load_heif and heif_status() == "") or _heif_state == "":
        formats.append("HEIF")
    return tuple(formats)


def ftyp_brands(data: bytes) -> set[bytes]:
    """Major and compatible brands of an ISO-BMFF 'ftyp' box at the start, or an empty set."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return set()
    box_len = min(struct.unpack(">I", data[:4])[0], len(data), 256)
    brands = {data[8:12]}
    brands.update(data[i : i + 4] for i in range(16, box_len - 3, 4))
    return brands


def sniff(data: bytes) -> tuple[str, str]:
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
    brands = ftyp_brands(data)
    if brands & AVIF_BRANDS:
        return "avif", "AVIF"
    if brands & HEIF_BRANDS:
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


def refuse_unidentified(data: bytes, name: str, allowed: tuple[str, ...]) -> InputError:
    allowed_txt = ", ".join(allowed)
    kind, what = sniff(data)
    if kind == "heif":
        why = heif_status()
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


def is_heif(data: bytes) -> bool:
    """Whether ``data`` starts like a HEIF (not AVIF) file, so pillow-heif must be registered."""
    brands = ftyp_brands(data)
    return bool(brands & HEIF_BRANDS and not brands & AVIF_BRANDS)
