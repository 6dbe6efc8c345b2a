"""Review in bulk: write every proposed change to a CSV or JSON file a person edits, then apply it.

Each row names the file, line and column, the image, its purpose, the
current and the proposed alt and why. A reviewer edits ``proposed_alt`` (an
empty value means decorative, ``alt=""``) and sets ``apply`` to ``no`` for
rows to skip. ``--apply`` then finds each element again - by position when
the file is unchanged, else by image and current alt - and writes exactly the
reviewed text.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .approved import ApprovedAlts
from .engine import Page, approved_link, needs_fixing, needs_person, person_reason, scan_page
from .judge import JudgeOptions
from .model import Finding
from .write import Edit, WriteResult, write_page

FIELDS = [
    "file",
    "line",
    "column",
    "element",
    "image",
    "purpose",
    "problems",
    "current_alt",
    "proposed_alt",
    "apply",
    "needs_person",
    "reason",
    "notes",
    "confidence",
    "image_sha256",
    "file_sha256",
]
_YES = {"yes", "y", "true", "1", "x"}


def review_rows(pages: list[Page]) -> list[dict[str, str]]:
    """One row per text alternative to fix; those that need a person first, else in file order."""
    rows = []
    for page in pages:
        if page.decoded is None:
            continue
        digest = hashlib.sha256(page.decoded.raw).hexdigest()
        for f in page.findings:
            if not (needs_fixing(f) or f.changes) or f.element.span is None:
                continue
            rows.append(_row(f, digest))
    rows.sort(key=lambda r: not r["needs_person"])  # stable: file order within each group
    return rows


def _row(f: Finding, digest: str) -> dict[str, str]:
    e = f.element
    notes = list(f.notes)
    if f.image is not None and f.image.random_weights:
        notes.insert(0, "random-weight test model: this caption is not a real description")
    return {
        "file": str(e.file),
        "line": str(e.line),
        "column": str(e.column),
        "element": e.kind,
        "image": e.src or "",
        "purpose": f.purpose,
        "problems": " ".join(p.rule for p in f.problems),
        "current_alt": "" if e.alt is None else e.alt,
        "proposed_alt": f.proposed or "",
        # A person's row starts as "no": the draft (if any) is written only once they say yes.
        "apply": "yes" if f.proposed is not None and not needs_person(f) else "no",
        "needs_person": person_reason(f),
        "reason": f.reason,
        "notes": " | ".join(notes),
        "confidence": _confidence(f),
        "image_sha256": (f.image.sha256 or "") if f.image is not None else "",
        "file_sha256": digest,
    }


def _confidence(f: Finding) -> str:
    score = f.image.confidence if f.image is not None else None
    return "" if score is None else f"{score:.3f}"


def write_review(path: Path, pages: list[Page]) -> int:
    """Write the review file (format from the extension: .csv or .json); return the row count."""
    rows = review_rows(pages)
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = json.dumps({"version": 1, "rows": rows}, indent=2, ensure_ascii=False) + "\n"
        path.write_text(data, encoding="utf-8")
    elif suffix == ".csv":
        # utf-8-sig: spreadsheet programs then read accents correctly.
        with path.open("w", encoding="utf-8-sig", newline="") as fh:
            writer = csv.DictWriter(fh, FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    else:
        raise InputError(f"review file {path}: use a .csv or .json extension")
    return len(rows)


def read_review(path: Path) -> list[dict[str, str]]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            rows = data["rows"] if isinstance(data, dict) else data
        elif suffix == ".csv":
            with path.open(encoding="utf-8-sig", newline="") as fh:
                rows = list(csv.DictReader(fh))
        else:
            raise InputError(f"review file {path}: use a .csv or .json extension")
    except FileNotFoundError:
        raise InputError(f"review file not found: {path}") from None
    except (json.JSONDecodeError, KeyError, csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"review file {path} cannot be read: {exc}") from None
    missing = {"file", "line", "column", "proposed_alt"} - set(rows[0] if rows else FIELDS)
    if missing:
        raise InputError(f"review file {path} lacks the column(s): {', '.join(sorted(missing))}")
    return [{k: ("" if v is None else str(v)) for k, v in row.items()} for row in rows]


@dataclass
class ApplyResult:
    written: list[WriteResult]
    skipped: list[str]  # why rows were not applied
    approved: int = 0  # approvals recorded in the approved-alt store


def apply_review(
    path: Path,
    *,
    max_chars: int = 150,
    backup: bool = False,
    dry_run: bool = False,
    approved: ApprovedAlts | None = None,
):
    """Apply the reviewed rows of ``path``; returns ApplyResult (and the pages, for diffs).

    With ``approved``, every applied row that names its image (``image_sha256``)
    is recorded there once its file is written, so later runs reuse the text.
    """
    rows = [r for r in read_review(path) if (r.get("apply") or "yes").strip().lower() in _YES]
    by_file: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_file.setdefault(row["file"], []).append(row)
    result = ApplyResult([], [])
    planned: list[tuple[Page, list[Edit]]] = []
    approvals: dict[Path, list[tuple[str, str, str | None, str]]] = {}
    for name, file_rows in by_file.items():
        page = Page(
            Path(name), Path(name).suffix.lower() in (".md", ".markdown", ".mdown", ".mkd", ".mkdn")
        )
        scan_page(page, JudgeOptions(max_chars=max_chars))
        if page.error or page.decoded is None:
            result.skipped.append(page.error or f"{name}: cannot be read")
            continue
        same = hashlib.sha256(page.decoded.raw).hexdigest()
        edits: list[Edit] = []
        used: set[int] = set()
        for row in file_rows:
            f = _locate(page.findings, row, unchanged=(row.get("file_sha256") in ("", None, same)))
            if f is None or id(f) in used:
                result.skipped.append(
                    f"{name}:{row['line']}:{row['column']}: element not found (the file changed since the review)"
                )
                continue
            used.add(id(f))
            if f.element.span is None:
                result.skipped.append(
                    f"{name}:{row['line']}:{row['column']}: this text alternative cannot be written"
                )
                continue
            text = " ".join(row["proposed_alt"].split())
            f.proposed = text
            if f.changes:
                edits.append(Edit(f.element.span, text))
            sha = (row.get("image_sha256") or "").strip()
            if sha:
                approvals.setdefault(page.path, []).append(
                    (sha, text, approved_link(f.element), f.element.where)
                )
        planned.append((page, edits))
    for page, edits in planned:
        if dry_run:
            continue
        written = write_page(page.path, page.decoded, edits, backup=backup)
        result.written.append(written)
        if approved is not None and written.error is None:
            for sha, text, link, where in approvals.get(page.path, []):
                approved.approve(sha, text, link, where)
    if approved is not None:
        result.approved = approved.save()
    return result, planned


def _locate(findings: list[Finding], row: dict[str, str], *, unchanged: bool) -> Finding | None:
    try:
        line, column = int(row["line"]), int(row["column"])
    except ValueError:
        return None
    image = row.get("image", "")
    if unchanged:
        for f in findings:
            if f.element.line == line and f.element.column == column:
                return f
        return None
    # The file changed: the same image with the same current alt, if exactly one matches.
    current = row.get("current_alt")
    matches = [
        f
        for f in findings
        if (f.element.src or "") == image
        and ("" if f.element.alt is None else f.element.alt) == (current or "")
    ]
    if len(matches) == 1:
        return matches[0]
    near = [f for f in matches if f.element.line == line]
    return near[0] if len(near) == 1 else None
