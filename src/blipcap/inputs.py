"""Inputs: what the user named -> sources, their labels, and their bytes (read safely).

:func:`expand_inputs` turns paths, folders, globs, URLs, ``-`` (standard
input), bytes, streams and PIL images into :class:`ImageInput` items, lazily
and in a stable order; :func:`source_label` is the label a result shows for a
source; :func:`read_source` reads a local file, bytes or a stream with a byte
cap, refusing FIFOs and devices. Decoding the bytes is :mod:`blipcap.images`'
job (:func:`blipcap.images.load_input` loads an :class:`ImageInput`).
"""

from __future__ import annotations

import glob
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from PIL import Image

from .errors import ImageTooLargeError, InputError
from .files import read_upto
from .results import ItemError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageInput",
    "Prepared",
    "expand_inputs",
    "format_bytes",
    "format_size",
    "is_url",
    "open_regular_file",
    "read_capped",
    "read_source",
    "source_label",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    ".jpg .jpeg .jpe .jfif .png .apng .webp .gif .bmp .dib .tif .tiff .heic .heif .hif .avif".split()
)


# -- expanding inputs --------------------------------------------------------------------


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


@dataclass(frozen=True)
class Prepared:
    """One input after the engine's prepare stage: pixels for the encode stage, or why it failed."""

    label: str | None
    pixels: Any = None
    error: ItemError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# -- labels -------------------------------------------------------------------------------


def is_url(source: Any) -> bool:
    """Whether ``source`` is an http(s) URL (fetched, SSRF-safely, rather than opened)."""
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def source_label(source: Any) -> str | None:
    """What a result shows as the path of ``source``: its label, path or file name, else None."""
    if isinstance(source, ImageInput):
        return source.label
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "filename", None) or getattr(source, "name", None)
    return str(name) if name else None


# -- reading bytes ---------------------------------------------------------------------


def read_capped(fp: IO[bytes], max_bytes: int, name: str) -> bytes:
    """Read all of ``fp`` but never more than ``max_bytes + 1`` bytes.

    Raises :class:`ImageTooLargeError` as soon as the stream proves longer than
    ``max_bytes``, so an endless or huge stream is never buffered.
    """
    data = read_upto(fp.read, max_bytes, 1 << 20)
    if len(data) > max_bytes:
        raise ImageTooLargeError(
            f"{name}: larger than the {format_bytes(max_bytes)} limit. "
            "Use a smaller file, or raise ImageLimits.max_bytes if you trust the source."
        )
    return data


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
        f"{name}: {format_size(size, max_bytes)} is larger than the {format_size(max_bytes, size)} "
        "limit. Use a smaller file, or raise ImageLimits.max_bytes if you trust the source."
    )


def read_source(source: Any, max_bytes: int, name: str) -> bytes:
    """The bytes of a path, bytes-like object or binary stream, never more than ``max_bytes``.

    Raises :class:`InputError` (missing, unreadable, not a regular file) or
    :class:`ImageTooLargeError` (over ``max_bytes``) naming ``name`` and the fix.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > max_bytes:
            raise _too_many_bytes(name, len(data), max_bytes)
        return data
    if isinstance(source, (str, os.PathLike)):
        try:
            with open_regular_file(source, name) as fp:
                size = os.fstat(fp.fileno()).st_size
                if size > max_bytes:  # fail fast; read_capped still guards growing files
                    raise _too_many_bytes(name, size, max_bytes)
                return read_capped(fp, max_bytes, name)
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
            return read_capped(source, max_bytes, name)
        except OSError as exc:
            raise InputError(f"{name}: cannot read the stream ({exc}).") from None
    raise TypeError(
        f"load_image() takes a path, bytes, a binary file object or a PIL image, not {type(source).__name__}"
    )


# -- sizes in messages ----------------------------------------------------------------------


def format_bytes(n: float) -> str:
    """``n`` bytes for a person: ``"1.5 GiB"``, ``"512 KiB"``, ``"12 bytes"``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{int(n)} bytes"


def format_size(n: int, other: int) -> str:
    """``n`` rounded, or in exact bytes when rounding would make it look equal to ``other``."""
    if n != other and format_bytes(n) == format_bytes(other):
        return f"{n:,} bytes"
    return format_bytes(n)
