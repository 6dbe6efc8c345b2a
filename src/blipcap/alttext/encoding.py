"""Find a page's encoding and map between decoded text and the original bytes.

Edits are made on the original bytes, never on a re-serialized document, so
every byte outside an edited alt value stays as it was. To make that safe the
whole file must round-trip: decoding (with ``surrogateescape`` for stray
bytes) and encoding again must give back the exact input. Files that do not
round-trip are refused with a clear error rather than risk a corrupted page.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from ..errors import InputError

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# HTML spec "prescan": <meta charset=...> or <meta http-equiv content="...charset=...">
# within the first 1024 bytes; we look a little further for pages with long heads.
_META = re.compile(
    rb"""<meta\b[^>]*?\bcharset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""",
    re.IGNORECASE,
)
# WHATWG maps these labels to windows-1252; so do we, so that new text is
# encoded to the bytes a browser will decode.
_WHATWG_ALIASES = {
    "ascii": "cp1252",
    "us-ascii": "cp1252",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "windows-1252": "cp1252",
    "x-sjis": "shift_jis",
    "sjis": "shift_jis",
    "shift-jis": "shift_jis",
    "utf8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
}


class EncodingError(InputError):
    """The file cannot be edited byte-exactly in its encoding."""


@dataclass(frozen=True)
class Decoded:
    """A file's text plus what it takes to turn text offsets back into byte offsets."""

    raw: bytes
    text: str
    encoding: str  # a Python codec name
    bom: bytes
    source: str  # how the encoding was found: "bom", "meta", "utf-8", "fallback"

    def byte_offset(self, char_offset: int) -> int:
        """Byte position in :attr:`raw` of the character at ``char_offset`` in :attr:`text`."""
        prefix = self.text[:char_offset].encode(self.encoding, "surrogateescape")
        return len(self.bom) + len(prefix)

    def encode_new(self, value: str) -> bytes:
        """Encode new text; characters the encoding lacks become numeric character references."""
        return value.encode(self.encoding, "xmlcharrefreplace")


def _python_codec(label: str) -> str | None:
    label = label.strip().lower()
    name = _WHATWG_ALIASES.get(label, label)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def detect(raw: bytes, *, html: bool = True) -> tuple[str, bytes, str]:
    """Return ``(codec, bom, source)`` for ``raw``: BOM, then ``<meta charset>``, then UTF-8, then windows-1252."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            return name, bom, "bom"
    if html:
        match = _META.search(raw[:4096])
        if match:
            codec = _python_codec(match.group(1).decode("ascii", "replace"))
            # A page that claims UTF-16 without a BOM is read as ASCII-compatible
            # by browsers (the meta tag itself proves it); the spec says use UTF-8.
            if codec and not codec.startswith("utf-16"):
                return codec, b"", "meta"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "cp1252", b"", "fallback"
    return "utf-8", b"", "utf-8"


def decode(raw: bytes, *, html: bool = True, path: str = "") -> Decoded:
    """Decode ``raw`` for editing; raise :class:`EncodingError` when it would not round-trip."""
    codec, bom, source = detect(raw, html=html)
    body = raw[len(bom) :]
    where = f"{path}: " if path else ""
    try:
        text = body.decode(codec, "surrogateescape")
        back = text.encode(codec, "surrogateescape")
    except (UnicodeError, LookupError) as exc:
        raise EncodingError(
            f"{where}cannot decode the file as {codec} ({source}): {exc}. "
            "Fix the <meta charset> declaration or convert the file to UTF-8."
        ) from exc
    if back != body:
        raise EncodingError(
            f"{where}the file does not survive a {codec} decode/encode round trip, so it "
            "cannot be edited without changing other bytes. Convert it to UTF-8 first."
        )
    return Decoded(raw=raw, text=text, encoding=codec, bom=bom, source=source)


def line_starts(text: str) -> list[int]:
    """Offsets where each line starts (lines end at "\\n", so CRLF files count the same)."""
    starts = [0]
    find = text.find
    i = find("\n")
    while i != -1:
        starts.append(i + 1)
        i = find("\n", i + 1)
    return starts
