"""Results: one :class:`Caption` per input, in input order, each saying where it came from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

_NAMED_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_name(name: str) -> str:
    """A file name as one line of valid UTF-8, reversibly (see docs/image-input.md).

    A backslash becomes ``\\\\``; newline, carriage return and tab become
    ``\\n``, ``\\r``, ``\\t``; other control characters and the bytes of a
    name that are not UTF-8 (which Python holds as lone surrogates,
    ``surrogateescape``) become ``\\xNN``. Everything else is kept.

    >>> escape_name("bad\\udcff\\udcfe.jpg"), escape_name("a\\tb\\\\c\\n.png")
    ('bad\\\\xff\\\\xfe.jpg', 'a\\\\tb\\\\\\\\c\\\\n.png')
    """
    return "".join(_escape_char(c) for c in name)


def _escape_char(c: str) -> str:
    if c in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[c]
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return c


def printable(text: str) -> str:
    """``text`` with undecodable bytes (lone surrogates) written ``\\xNN``, so it can be encoded."""
    return "".join(_escape_char(c) if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def printable_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record ready to write: its ``path`` escaped, undecodable bytes elsewhere made printable."""
    out = _printable_value(record)
    if record.get("path") is not None:
        out["path"] = escape_name(record["path"])
    return out


def _printable_value(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {k: _printable_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable_value(v) for v in value]
    return value


@dataclass(frozen=True)
class ItemError:
    """Why one input produced no caption. ``type`` is the exception class name."""

    type: str
    message: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> ItemError:
        return cls(type=type(exc).__name__, message=str(exc) or type(exc).__name__)


@dataclass(frozen=True)
class Provenance:
    """Everything needed to reproduce (or distrust) a caption."""

    model: str
    revision: str | None
    backend: str
    dtype: str
    device: str
    options: dict[str, Any]
    blipcap_version: str
    machine_generated: bool = True
    random_weights: bool = False
    """True for random-weight test checkpoints: the text is meaningless, never a real caption."""


@dataclass(frozen=True)
class Caption:
    """The result for one input: a caption, or an error."""

    path: str | None
    caption: str | None
    captions: list[str] = field(default_factory=list)
    error: ItemError | None = None
    provenance: Provenance | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_record(self) -> dict[str, Any]:
        """The JSON Lines record of ``blipcap caption --format jsonl``."""
        p = self.provenance
        record: dict[str, Any] = {"path": self.path, "caption": self.caption}
        if len(self.captions) > 1:
            record["captions"] = list(self.captions)
        record["error"] = asdict(self.error) if self.error else None
        if p is not None:
            record.update(
                model=p.model,
                revision=p.revision,
                backend=p.backend,
                dtype=p.dtype,
                device=p.device,
                options=p.options,
                machine_generated=p.machine_generated,
                blipcap_version=p.blipcap_version,
            )
            if p.random_weights:
                record["random_weights"] = True
        return record
