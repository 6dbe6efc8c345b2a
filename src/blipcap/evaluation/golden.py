"""Golden captions: fail when any caption drifts from a stored run.

A golden file is the JSON Lines output of ``blipcap caption --format jsonl``
on a fixed set of images. ``blipcap eval --golden FILE`` captions the same
images again with the same decoding options and exits 1 if a single caption
(or a single error) differs - the check to run in CI before upgrading torch,
onnxruntime, blipcap or the model revision. Comparison is exact: the point is
to notice *any* change, then decide whether it is acceptable (and re-bless).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..records import as_record
from .runs import PROVENANCE_FIELDS, Run


@dataclass(frozen=True)
class Drift:
    path: str
    expected: list[str] | None
    """Golden captions (None: the golden run had an error here)."""
    actual: list[str] | None
    expected_error: str | None = None
    actual_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return as_record(self, "path expected actual expected_error actual_error")

    def describe(self) -> str:
        def show(captions: list[str] | None, error: str | None) -> str:
            if captions is None:
                return f"error {error}"
            return " | ".join(repr(c) for c in captions)

        return (
            f"{self.path}\n  golden: {show(self.expected, self.expected_error)}"
            f"\n  now:    {show(self.actual, self.actual_error)}"
        )


@dataclass
class GoldenReport:
    golden: str
    total: int = 0
    identical: int = 0
    drift: list[Drift] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Golden images the new run has no result for."""
    provenance_changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """field -> {"golden", "now"}: context for a drift (e.g. another revision), never a failure."""

    @property
    def ok(self) -> bool:
        return not self.drift and not self.missing

    def to_dict(self) -> dict[str, Any]:
        return as_record(
            self,
            "golden ok total identical drift missing provenance_changes",
            drift=[d.to_dict() for d in self.drift],
        )


def _error_type(error: dict[str, Any] | None) -> str | None:
    return None if error is None else str(error.get("type"))


def compare_golden(golden: Run, run: Run) -> GoldenReport:
    """Compare a new run with the golden one, image by image, exactly."""
    report = GoldenReport(golden.source, total=len(golden))
    for key, expected in golden.items.items():
        actual = run.items.get(key)
        if actual is None:
            report.missing.append(expected.path)
            continue
        same_text = expected.captions == actual.captions
        # An image that failed in the golden run must fail the same way now.
        same_error = _error_type(expected.error) == _error_type(actual.error)
        if same_text and same_error:
            report.identical += 1
            continue
        report.drift.append(
            Drift(
                expected.path,
                list(expected.captions) if expected.error is None else None,
                list(actual.captions) if actual.error is None else None,
                _error_type(expected.error),
                _error_type(actual.error),
            )
        )
    for name in PROVENANCE_FIELDS:
        before, now = golden.provenance.get(name), run.provenance.get(name)
        if name in golden.provenance and before != now:
            report.provenance_changes[name] = {"golden": before, "now": now}
    return report
