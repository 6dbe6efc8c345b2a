"""Alt text a reviewer approved, kept by the SHA-256 of the image's bytes and reused.

``blipcap alt-text --apply review.csv`` records every row it applies here;
later runs give the same image (same bytes, under any name, on any page) the
same alt instead of a machine proposal, so nobody reviews it twice.

An approval is tied to the image's role: a linked image's alt names where the
link goes, so it is reused only for the same image linking to the same place;
any other approval serves the image wherever it is not the only content of a
link or button.

The file is JSON (readable, diffable: commit it with the site)::

    {"version": 1, "images": {"<sha256>": [
        {"alt": "Sales by quarter, 2024.", "link": null,
         "where": "site/report.html:12:3", "approved": "2026-12-03T14:00:00Z"}]}}

It is only ever replaced whole (temporary file, fsync, rename), with a lock
held while it is re-read and merged, so a crash or a second run never leaves
it half-written.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputError

FILE_NAME = "alt-text-approved.json"
VERSION = 1


def default_approved_path() -> Path:
    """``alt-text-approved.json`` in the working directory (run from the site's repository)."""
    return Path(FILE_NAME)


@dataclass(frozen=True)
class Approval:
    alt: str
    link: str | None  # the link or form target for a functional image, else None
    where: str = ""  # file:line:column where it was approved
    approved: str = ""  # UTC time, ISO 8601


class ApprovedAlts:
    """Approved alt text by image hash. ``path=None`` keeps it in memory only."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = Path(path) if path is not None else None
        self._images: dict[str, list[Approval]] = {}
        self._new: dict[tuple[str, str | None], Approval] = {}
        if self.path is not None and self.path.exists():
            self._images = _read(self.path)

    def __len__(self) -> int:
        return sum(len(v) for v in self._images.values())

    def lookup(self, sha256: str, link: str | None = None) -> str | None:
        """The approved alt for this image in this role (``link``), or None."""
        for a in self._images.get(sha256, []):
            if a.link == link:
                return a.alt
        return None

    def approve(self, sha256: str, alt: str, link: str | None = None, where: str = "") -> None:
        """Record ``alt`` for the image (in memory; :meth:`save` writes it)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        approval = Approval(" ".join(alt.split()), link, where, stamp)
        _put(self._images, sha256, approval)
        self._new[(sha256, link)] = approval

    def save(self) -> int:
        """Merge this run's approvals into the file on disk; return how many were new here."""
        if self.path is None or not self._new:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path):
            merged = _read(self.path) if self.path.exists() else {}
            for (sha, _link), approval in self._new.items():
                _put(merged, sha, approval)
            data = {
                "version": VERSION,
                "images": {
                    sha: [asdict(a) for a in merged[sha]] for sha in sorted(merged) if merged[sha]
                },
            }
            text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
            _replace(self.path, text.encode("utf-8"))
        self._images = merged
        n = len(self._new)
        self._new.clear()
        return n


def _put(images: dict[str, list[Approval]], sha: str, approval: Approval) -> None:
    kept = [a for a in images.get(sha, []) if a.link != approval.link]
    images[sha] = [*kept, approval]


def _read(path: Path) -> dict[str, list[Approval]]:
    fix = "fix it or move it away (blipcap only writes it whole), or pass --approved OTHER.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(
            f"approved alt text {path} cannot be read: {exc.strerror or exc}"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"approved alt text {path} is not valid JSON ({exc}): {fix}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise InputError(
            f"approved alt text {path}: expected a version {VERSION} file from blipcap: {fix}"
        )
    images: dict[str, list[Approval]] = {}
    try:
        for sha, rows in (data.get("images") or {}).items():
            for row in rows:
                link = row.get("link")
                if not isinstance(row["alt"], str) or not (link is None or isinstance(link, str)):
                    raise TypeError("alt and link must be text")
                _put(images, str(sha), Approval(row["alt"], link, str(row.get("where", "")),
                                                str(row.get("approved", ""))))  # fmt: skip
    except (AttributeError, KeyError, TypeError) as exc:
        raise InputError(f"approved alt text {path} has a malformed entry ({exc}): {fix}") from None
    return images


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``.NAME.lock`` next to ``path`` while the file is merged (POSIX)."""
    try:
        import fcntl
    except ImportError:  # Windows: the rename is still atomic; concurrent runs may not merge
        yield
        return
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one."""
    from .write import _fsync_dir

    target = Path(os.path.realpath(path))
    mode = target.stat().st_mode & 0o7777 if target.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
