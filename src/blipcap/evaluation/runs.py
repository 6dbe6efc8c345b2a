"""One captioning run, as stored by ``blipcap caption --format jsonl`` or just produced in memory.

Agreement scoring and golden-caption checks both compare two runs image by
image; a run is keyed by the image path it was given (normalized, so that
``./a.jpg`` and ``a.jpg`` are the same image).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EvaluationError
from ..options import OPTION_NAMES, CaptionOptions
from ..results import Caption
from .formats import read_jsonl

PROVENANCE_FIELDS = (
    "model",
    "revision",
    "backend",
    "dtype",
    "device",
    "blipcap_version",
    "random_weights",
)


def path_key(path: str) -> str:
    return os.path.normpath(path) if "://" not in path else path


@dataclass(frozen=True)
class RunItem:
    path: str
    captions: tuple[str, ...]
    """The caption, or the K captions when the run made several."""
    error: dict[str, Any] | None = None

    @property
    def caption(self) -> str | None:
        return self.captions[0] if self.captions else None


@dataclass
class Run:
    """Captions by image path, in the run's order, plus where they came from."""

    source: str
    items: dict[str, RunItem] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    options: list[dict[str, Any]] = field(default_factory=list)
    """The distinct decoding options the run's records carry."""

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: RunItem) -> None:
        key = path_key(item.path)
        if key in self.items:
            raise EvaluationError(f"{self.source}: {item.path!r} appears twice")
        self.items[key] = item

    def caption_options(self) -> CaptionOptions | None:
        """The options every record was made with (None when the records do not say)."""
        if not self.options:
            return None
        if len(self.options) > 1:
            raise EvaluationError(
                f"{self.source}: records were made with {len(self.options)} different decoding "
                "options; split the file by options and check each part"
            )
        stored = self.options[0]
        unknown = set(stored) - OPTION_NAMES
        if unknown:
            raise EvaluationError(
                f"{self.source}: its records use option(s) {', '.join(sorted(unknown))} that this "
                "blipcap does not know; it was written by a newer blipcap"
            )
        return CaptionOptions(**stored)


def _item_from_record(record: dict[str, Any]) -> RunItem:
    captions = record.get("captions") or (
        [record["caption"]] if record.get("caption") is not None else []
    )
    return RunItem(str(record["path"]), tuple(str(c) for c in captions), record.get("error"))


def read_run(path: str | Path, what: str = "captions file") -> Run:
    """A run from the JSON Lines of ``blipcap caption --format jsonl``."""
    run = Run(str(path))
    for record in read_jsonl(path, what):
        run.add(_item_from_record(record))
        if not run.provenance:
            run.provenance = {k: record.get(k) for k in PROVENANCE_FIELDS if k in record}
        options = record.get("options")
        if isinstance(options, dict) and options not in run.options:
            run.options.append(options)
    return run


def run_from_results(source: str, paths: Sequence[str], results: Iterable[Caption]) -> Run:
    """A run from Captioner results, keyed by the paths the captioner was given."""
    run = Run(source)
    for path, result in zip(paths, results, strict=True):
        record = result.to_record()
        record["path"] = path
        run.add(_item_from_record(record))
        if not run.provenance:
            run.provenance = {k: record.get(k) for k in PROVENANCE_FIELDS if k in record}
        if record.get("options") and record["options"] not in run.options:
            run.options.append(record["options"])
    return run


def resolve_paths(run: Run, base: str | Path | None) -> list[str]:
    """The run's image paths to caption again: relative paths are taken below ``base`` (default: cwd)."""
    out = []
    for item in run.items.values():
        p = item.path
        if base is not None and "://" not in p and not os.path.isabs(p):
            p = str(Path(base) / p)
        out.append(p)
    return out
