"""Apply alt-text edits to the original bytes, show them as a diff, write files atomically.

Only the bytes of an alt value (or of a Markdown image description) change,
or a new ``alt="..."`` is inserted: encoding, BOM, line endings, attribute
order and quoting stay as they were. New text is escaped for its context and
encoded in the page's own encoding, with numeric character references for
characters that encoding cannot hold.
"""

from __future__ import annotations

import codecs
import difflib
import os
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .encoding import Decoded
from .model import Span
from .scan_markdown import escape_alt

# Tests set this to a number of seconds to pause between writing the temporary
# file and renaming it over the original, so they can kill the process there.
PAUSE_ENV = "BLIPCAP_TEST_PAUSE_BEFORE_REPLACE"


@dataclass(frozen=True)
class Edit:
    span: Span
    text: str  # the new alt text, plain (not escaped)


def escape_attr(value: str, quote: str) -> str:
    """Escape ``value`` for an HTML attribute quoted with ``quote`` (always quoted on output)."""
    out = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if quote == "'":
        return out.replace("'", "&#39;")
    return out.replace('"', "&quot;")


def render(edit: Edit) -> str:
    """The text that replaces (or is inserted at) the span."""
    span = edit.span
    if span.attr == "markdown":
        return escape_alt(edit.text)
    if span.mode == "value":
        if span.quote:
            return escape_attr(edit.text, span.quote)
        # An unquoted value gets quotes: the new text may hold spaces.
        return '"' + escape_attr(edit.text, '"') + '"'
    quote = span.quote if span.quote in ("'", '"') else '"'
    value = quote + escape_attr(edit.text, quote) + quote
    if span.mode == "bare":
        return "=" + value
    return f" {span.attr}={value}"


def apply_edits(decoded: Decoded, edits: list[Edit]) -> bytes:
    """New file bytes: ``decoded.raw`` with each edit spliced in at its byte offsets."""
    raw = decoded.raw
    out: list[bytes] = []
    pos = 0
    last_end = -1
    for edit in sorted(edits, key=lambda e: (e.span.start, e.span.end)):
        if edit.span.start < last_end:
            raise ValueError(f"overlapping edits at character {edit.span.start}")
        start = decoded.byte_offset(edit.span.start)
        end = start if edit.span.mode != "value" else decoded.byte_offset(edit.span.end)
        out.append(raw[pos:start])
        out.append(decoded.encode_new(render(edit)))
        pos = end
        last_end = edit.span.end
    out.append(raw[pos:])
    return b"".join(out)


def unified_diff(path: Path, decoded: Decoded, new: bytes) -> str:
    """A unified diff of the change that ``git apply`` and ``patch`` apply to a UTF-8 file.

    Lines keep their own endings (CRLF stays CRLF) and a UTF-8 BOM stays on line 1.
    """
    bom = "\ufeff" if decoded.bom == codecs.BOM_UTF8 else ""
    old_text = bom + decoded.text
    new_text = bom + new[len(decoded.bom) :].decode(decoded.encoding, "surrogateescape")

    def lines(text: str) -> list[str]:
        # Split at "\n" only, each line keeping its ending ("\r\n" included).
        parts = [ln + "\n" for ln in text.split("\n")]
        parts[-1] = parts[-1][:-1]  # what follows the last "\n"
        return parts if parts[-1] else parts[:-1]

    diff = difflib.unified_diff(lines(old_text), lines(new_text), f"a/{path}", f"b/{path}", n=1)
    # A last line without a newline gets the marker that diff tools expect after it.
    out = "".join(
        ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n" for ln in diff
    )
    # Stray bytes (surrogate escapes) print as U+FFFD rather than failing the terminal.
    return out.encode("utf-8", "replace").decode("utf-8")


def atomic_write(path: Path, data: bytes, *, backup: bool = False) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file.

    Temporary file in the same directory, fsync, rename over the original,
    fsync the directory. A symlink is followed (its target is updated); a hard
    link is broken, as with ``sed -i``. ``backup`` keeps the original as
    ``FILE.bak`` (written the same safe way before the original is replaced).
    """
    target = Path(os.path.realpath(path))
    st = target.stat()
    if backup:
        _write_replace(target.with_name(target.name + ".bak"), target.read_bytes(), st)
    _write_replace(target, data, st)


def _write_replace(target: Path, data: bytes, st: os.stat_result) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".blipcap.tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        try:
            os.chown(tmp, st.st_uid, st.st_gid)
        except (PermissionError, AttributeError):
            pass  # not ours to give away: the file keeps our ownership
        pause = os.environ.get(PAUSE_ENV)
        if pause:
            time.sleep(float(pause))
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
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


def edits_for(findings, *, unreviewed: bool = True) -> list[Edit]:
    """One edit per finding whose proposal changes the file.

    ``unreviewed=False`` leaves out proposals that need a person
    (:func:`~blipcap.alttext.engine.needs_person`): what ``--write`` does
    unless ``--accept-unreviewed`` is given.
    """
    if not unreviewed:
        from .engine import needs_person

        findings = [f for f in findings if not needs_person(f)]
    return [Edit(f.element.span, f.proposed) for f in findings if f.changes]


@dataclass
class WriteResult:
    path: Path
    edits: int
    error: str | None = None


def write_page(
    path: Path, decoded: Decoded, edits: list[Edit], *, backup: bool = False
) -> WriteResult:
    """Apply ``edits`` to ``path`` atomically, refusing if the file changed since it was read."""
    if not edits:
        return WriteResult(path, 0)
    try:
        current = path.read_bytes()
    except OSError as exc:
        return WriteResult(path, 0, f"{path}: cannot read it again: {exc.strerror or exc}")
    if current != decoded.raw:
        return WriteResult(
            path, 0, f"{path}: changed while blipcap was working on it; not written. Run again."
        )
    try:
        atomic_write(path, apply_edits(decoded, edits), backup=backup)
    except OSError as exc:
        return WriteResult(
            path, 0, f"{path}: write failed, the original is unchanged: {exc.strerror or exc}"
        )
    return WriteResult(path, len(edits))
