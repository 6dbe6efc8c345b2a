"""Results: one :class:`Caption` per input, in input order, each saying where it came from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
