"""Results: one :class:`Caption` per input, in input order, each saying where it came from."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .options import CaptionOptions

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
class Confidence:
    """How sure the decoder was of one caption, from its own token log-probabilities.

    Each generated token's log-probability is ``log_softmax`` of the
    decoder's logits at that step, before any penalty, n-gram block, minimum
    length or sampling warper (the model's view, not the search's); the
    end-of-caption token counts when the caption ended by itself. For beam
    search these are the finished hypothesis' own per-token values (not the
    length-penalized beam score).

    It says how *predictable* the words were to the model - not whether they
    are true of the image. A fluent wrong caption can score high, and it is
    comparable only between captions of the same model (see docs/captioning.md).
    """

    mean_logprob: float
    """Mean token log-probability (length-normalized; <= 0)."""
    min_logprob: float
    """The least likely token's log-probability: one doubtful word pulls it down."""
    tokens: int
    """How many tokens were scored."""

    @property
    def score(self) -> float:
        """``exp(mean_logprob)``: the geometric-mean token probability, in (0, 1]."""
        return math.exp(self.mean_logprob)

    @classmethod
    def from_logprobs(cls, logprobs: Sequence[float]) -> Confidence | None:
        """None for no tokens (nothing was scored)."""
        if not logprobs:
            return None
        values = [float(x) for x in logprobs]
        return cls(sum(values) / len(values), min(values), len(values))

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": float(f"{self.score:.4g}"),  # 4 significant digits: tiny scores stay > 0
            "mean_logprob": round(self.mean_logprob, 4),
            "min_logprob": round(self.min_logprob, 4),
            "tokens": self.tokens,
        }


@dataclass(frozen=True)
class GuardReport:
    """What the degeneration guard (:mod:`blipcap.guard`) found in a caption and did about it."""

    detected: tuple[str, ...]
    """Problems in the first decoding: "repeat", "artifact", "boilerplate"."""
    action: str
    """The decoding that gave the kept caption, e.g. "no_repeat_ngram=3"; "none": the first."""
    resolved: bool
    """False when no attempt was free of problems (the one with the fewest is kept)."""

    def to_dict(self) -> dict[str, Any]:
        return {"detected": list(self.detected), "action": self.action, "resolved": self.resolved}


@dataclass(frozen=True)
class Caption:
    """The result for one input: a caption, or an error."""

    path: str | None
    caption: str | None
    captions: list[str] = field(default_factory=list)
    error: ItemError | None = None
    provenance: Provenance | None = None
    confidences: list[Confidence | None] = field(default_factory=list)
    """One per caption, in the order of ``captions`` (empty for an error)."""
    guard: GuardReport | None = None
    """Set when the degeneration guard found a problem in this input's first decoding."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def confidence(self) -> Confidence | None:
        """The confidence of ``caption`` (the first caption)."""
        return self.confidences[0] if self.confidences else None

    def to_record(self) -> dict[str, Any]:
        """The JSON Lines record of ``blipcap caption --format jsonl``."""
        p = self.provenance
        record: dict[str, Any] = {"path": self.path, "caption": self.caption}
        if len(self.captions) > 1:
            record["captions"] = list(self.captions)
        record["confidence"] = _confidence_dict(self.confidence)
        if len(self.captions) > 1:
            record["confidences"] = [_confidence_dict(c) for c in self.confidences]
        if self.guard is not None:
            record["guard"] = self.guard.to_dict()
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


def _confidence_dict(confidence: Confidence | None) -> dict[str, Any] | None:
    return confidence.to_dict() if confidence is not None else None


class CaptionModel(Protocol):
    """What the tools built on captions (index, documents, social, evaluation, alt text) need
    from a captioner: :class:`~blipcap.Captioner` is one, ``tests/fakes.py`` has another.

    Options travel as one :class:`~blipcap.options.CaptionOptions` (``options=``), never as
    loose keyword dicts.
    """

    random_weights: bool

    def caption_iter(
        self, images: Iterable[Any], preset: str | None = None, options: CaptionOptions | None = None,
        batch_size: int | str = "auto", progress: bool = False,
    ) -> Iterator[Caption]: ...  # fmt: skip

    def caption(self, images: Iterable[Any], *args: Any, **kwargs: Any) -> list[Caption]:
        """``list(caption_iter(...))``, with the same parameters."""
        ...
