"""What the index reads from an image file besides pixels: hash, EXIF date and camera,
embedded descriptions, and a small thumbnail. Metadata is untrusted input: every
value is parsed defensively and a broken one becomes None, never an error."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PIL import ExifTags, Image

from . import xmp

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".png",
        ".webp",
        ".gif",
        ".bmp",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        ".avif",
    }
)
THUMBNAIL_PX = 256

# Descriptions cameras write by default; not something a person said about the photo.
_CAMERA_BOILERPLATE = {
    "olympus digital camera",
    "sony dsc",
    "digital camera",
    "default",
    "samsung digital camera",
    "kodak digital still camera",
    "minolta digital camera",
    "",
}


@dataclass(frozen=True)
class FileMeta:
    taken_at: str | None = None
    camera: str | None = None
    embedded_description: str | None = None
    format: str = ""


def sha256_file(path: str | os.PathLike[str], max_bytes: int) -> tuple[str, bytes]:
    """The SHA-256 of a file and its bytes (read once, capped at ``max_bytes``).

    Raises :class:`~blipcap.errors.InputError` for a FIFO, socket or device
    (reading one could block forever) and for a file over ``max_bytes``.
    """
    from ..images import open_regular_file, read_capped

    with open_regular_file(path) as fh:
        data = read_capped(fh, max_bytes, os.fspath(path))
    return hashlib.sha256(data).hexdigest(), data


def read_meta(data: bytes) -> FileMeta:
    """EXIF date/camera and an embedded description, from the header only (no pixel decode)."""
    from ..images import allowed_formats

    try:
        with Image.open(io.BytesIO(data), formats=allowed_formats()) as im:
            fmt = im.format or ""
            exif = im.getexif()
            exif_ifd = exif.get_ifd(ExifTags.IFD.Exif)
            info = dict(im.info)
    except Exception:  # noqa: BLE001 - hostile headers raise all sorts; metadata is optional
        return FileMeta()
    taken = _exif_datetime(exif_ifd.get(ExifTags.Base.DateTimeOriginal)) or _exif_datetime(
        exif.get(ExifTags.Base.DateTime)
    )
    make = _clean(exif.get(ExifTags.Base.Make))
    model = _clean(exif.get(ExifTags.Base.Model))
    if make and model and model.lower().startswith(make.split()[0].lower()):
        camera = model  # "Canon" + "Canon EOS 5D" -> "Canon EOS 5D"
    else:
        camera = " ".join(x for x in (make, model) if x) or None
    description = None
    try:
        description = xmp.read_embedded(info)
    except Exception:  # noqa: BLE001
        description = None
    if description is None:
        description = _clean(exif.get(ExifTags.Base.ImageDescription), limit=2000)
    if description is not None and description.strip().lower() in _CAMERA_BOILERPLATE:
        description = None
    return FileMeta(taken_at=taken, camera=camera, embedded_description=description, format=fmt)


def _clean(value: Any, limit: int = 100) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = "".join(ch for ch in str(value) if ch.isprintable()).strip()
    return text[:limit] or None


def _exif_datetime(value: Any) -> str | None:
    """'2021:07:04 18:30:00' -> '2021-07-04T18:30:00'; anything unparsable -> None."""
    text = _clean(value, limit=40)
    if not text:
        return None
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M", "%Y:%m:%d"):
        try:
            parsed = datetime.strptime(text[: len(datetime(2000, 1, 1).strftime(fmt))], fmt)
        except ValueError:
            continue
        if 1826 <= parsed.year <= 2200:  # zeroed-out or garbage clocks
            return parsed.isoformat()
    return None


def thumbnail_jpeg(image: Image.Image, size: int = THUMBNAIL_PX) -> bytes:
    """A small JPEG (longest side ``size``) for result lists."""
    thumb = image.copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    thumb.convert("RGB").save(buf, format="JPEG", quality=80, optimize=True)
    return buf.getvalue()


def mtime_iso(mtime_ns: int) -> str:
    return datetime.fromtimestamp(mtime_ns / 1e9).replace(microsecond=0).isoformat()
