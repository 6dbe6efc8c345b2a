"""Crash-safe file replacement (the alt-text writer, the approvals store, XMP sidecars) and
capped reads (local images, fetched URLs)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def replace_file(
    target: Path,
    data: bytes,
    *,
    mode: int,
    owner: tuple[int, int] | None = None,
    suffix: str = ".tmp",
    before_replace: Callable[[], None] | None = None,
) -> None:
    """Replace ``target`` with ``data`` so that a crash leaves the old file or the new one.

    Temporary file in the same directory, fsync, rename over ``target``, fsync
    the directory. ``mode`` (and ``owner``, (uid, gid), when we may give it
    away) are set on the new file before it replaces the old one.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if owner is not None:
            try:
                os.chown(tmp, *owner)
            except (PermissionError, AttributeError):
                pass  # not ours to give away: the file keeps our ownership
        if before_replace is not None:
            before_replace()
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every platform can)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows: directories cannot be opened
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_upto(read: Callable[[int], bytes], max_bytes: int, chunk_size: int) -> bytes:
    """Call ``read(n)`` until it returns nothing or more than ``max_bytes`` bytes have come.

    At most ``max_bytes + 1`` bytes are read, so a result longer than ``max_bytes``
    says the source is over the limit without an endless or huge one being buffered.
    """
    chunks: list[bytes] = []
    total = 0
    while total <= max_bytes:
        chunk = read(min(chunk_size, max_bytes + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
