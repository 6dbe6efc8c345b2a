"""Agreement between two runs: does int8, bf16 or another backend caption like fp32 does?

The reference run's captions play the part of the human references and the
COCO metrics score the candidate run against them; alongside, the share of
images whose captions are *identical*, which is what most users want to know
about a quantized model. CIDEr's weights come from the reference captions of
the whole set, so it needs many images (dozens at least) to mean anything;
on one image it is 0 by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import EvaluationError
from ..records import as_record
from .runs import Run


@dataclass
class Agreement:
    """How two runs compare, image by image."""

    compared: int = 0
    identical: int = 0
    differences: list[dict[str, Any]] = field(default_factory=list)
    """{"path", "reference", "candidate"} for every image whose captions differ."""
    only_in_reference: list[str] = field(default_factory=list)
    only_in_candidate: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    """{"path", "run", "error"}: images with no caption in one of the runs."""

    @property
    def identical_rate(self) -> float | None:
        return self.identical / self.compared if self.compared else None

    def to_dict(self) -> dict[str, Any]:
        return as_record(
            self,
            "compared identical identical_rate differences only_in_reference only_in_candidate "
            "failed",
        )


def compare_runs(
    reference: Run, candidate: Run
) -> tuple[Agreement, dict[str, list[str]], dict[str, str]]:
    """Compare two runs; also return the (references, candidates) to score with the metrics.

    When the reference run holds several captions per image (``--num-captions``),
    all of them are references; the candidate's first caption is scored.
    """
    result = Agreement()
    refs: dict[str, list[str]] = {}
    cands: dict[str, str] = {}
    for key, ref in reference.items.items():
        cand = candidate.items.get(key)
        if cand is None:
            result.only_in_reference.append(ref.path)
            continue
        if ref.caption is None or cand.caption is None:
            for run, item in (("reference", ref), ("candidate", cand)):
                if item.caption is None:
                    result.failed.append({"path": ref.path, "run": run, "error": item.error})
            continue
        result.compared += 1
        if ref.caption == cand.caption:
            result.identical += 1
        else:
            result.differences.append(
                {"path": ref.path, "reference": ref.caption, "candidate": cand.caption}
            )
        refs[key] = list(ref.captions)
        cands[key] = cand.caption
    result.only_in_candidate = [
        item.path for key, item in candidate.items.items() if key not in reference.items
    ]
    if not result.compared:
        raise EvaluationError(
            f"{reference.source} and {candidate.source} have no image in common with a caption "
            "in both: compare runs over the same image paths (as given to `blipcap caption`)"
        )
    return result, refs, cands
