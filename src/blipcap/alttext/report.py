"""Reports: JSON for tools, HTML for people (itself accessible), SARIF 2.1.0 for code scanning.

Every finding is tied to WCAG 2.2 success criterion 1.1.1 Non-text Content,
with its file, line and column.
"""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from pathlib import Path

from ..results import escape_name
from ..version import __version__
from .encoding import line_starts
from .engine import Run, needs_fixing, needs_person, person_reason
from .model import Finding
from .rules import RULES, UNDERSTANDING
from .scan_html import _line_col
from .write import render

TOOL = "blipcap alt-text"
INFO_URI = "https://www.w3.org/WAI/tutorials/images/"
WCAG = {"criterion": "1.1.1", "name": "Non-text Content", "level": "A", "url": UNDERSTANDING}


def _rel(path: Path) -> str:
    """``path`` relative to the working folder, escaped as caption output escapes names."""
    try:
        return escape_name(Path(os.path.relpath(path)).as_posix())
    except ValueError:
        return escape_name(path.as_posix())


def _finding_dict(f: Finding) -> dict:
    e = f.element
    image = f.image
    return {
        "file": _rel(e.file),
        "line": e.line,
        "column": e.column,
        "element": e.kind,
        "snippet": e.snippet,
        "image": e.src,
        "status": "fix" if needs_fixing(f) else ("manual" if f.status == "manual" else "ok"),
        "needs_person": needs_person(f),
        "needs_person_reason": person_reason(f),
        "doubts": [d.code for d in f.doubts],
        "purpose": f.purpose,
        "problems": [
            {"rule": p.rule, "message": p.message, "level": RULES[p.rule][3], "wcag": "1.1.1"}
            for p in f.problems
        ],
        "current_alt": e.alt,
        "text_alternative_from": e.name_from,
        "proposed_alt": f.proposed,
        "reason": f.reason,
        "notes": list(f.notes),
        "image_error": image.error if image else None,
        "machine_generated": bool(
            image and image.caption and f.proposed and f.reason.startswith("caption")
        ),
        "random_weights": bool(image and image.random_weights),
        "confidence": image.confidence if image else None,
    }


def _person_codes(f: Finding) -> list[str]:
    return [d.code for d in f.doubts] or ["nothing-proposed"]


def summary(run: Run) -> dict:
    findings = run.findings
    return {
        "files": run.stats.files,
        "files_failed": len(run.failed_pages),
        "elements": len(findings),
        "ok": sum(1 for f in findings if not needs_fixing(f)),
        "to_fix": sum(1 for f in findings if needs_fixing(f)),
        "proposed": sum(1 for f in findings if f.changes),
        # Written by --write / shown in the diff without --accept-unreviewed:
        "ready": sum(1 for f in findings if f.changes and not needs_person(f)),
        # Need a person: nothing proposed, or a proposal in doubt ("drafts" of them have text).
        "manual": sum(1 for f in findings if needs_person(f)),
        "drafts": sum(1 for f in findings if needs_person(f) and f.changes),
        "needs_person_by_reason": dict(
            sorted(
                Counter(c for f in findings if needs_person(f) for c in _person_codes(f)).items()
            )
        ),
        "by_rule": dict(sorted(Counter(p.rule for f in findings for p in f.problems).items())),
        "by_purpose": dict(sorted(Counter(f.purpose for f in findings if needs_fixing(f)).items())),
        "images_read": run.stats.images_read,
        "captioned": run.stats.captioned,
        "caption_cache_hits": run.stats.caption_cache_hits,
        "ocr_read": run.stats.ocr_read,
        "ocr_cache_hits": run.stats.ocr_cache_hits,
        "approved_reused": run.stats.approved_reused,
    }


def to_json(run: Run, max_chars: int) -> dict:
    return {
        "tool": TOOL,
        "version": __version__,
        "wcag": WCAG,
        "max_chars": max_chars,
        "model": run.provenance,
        "random_weights": run.random_weights,
        "notes": run.notes,
        "summary": summary(run),
        "files": [
            {
                "path": _rel(p.path),
                "encoding": p.decoded.encoding if p.decoded else None,
                "error": p.error,
                "elements": len(p.findings),
            }
            for p in run.pages
        ],
        "findings": [_finding_dict(f) for f in run.findings],
    }


# --------------------------------------------------------------------------- SARIF


def to_sarif(run: Run) -> dict:
    rule_ids = list(RULES)
    rules = []
    for rid in rule_ids:
        name, full, help_uri, level = RULES[rid]
        rules.append(
            {
                "id": rid,
                "name": "".join(w.capitalize() for w in rid.split("-")),
                "shortDescription": {"text": name},
                "fullDescription": {"text": full},
                "helpUri": help_uri,
                "help": {
                    "text": f"{full} See WCAG 2.2 Understanding 1.1.1: {UNDERSTANDING}",
                    "markdown": f"{full}\n\nSee [Understanding WCAG 2.2 SC 1.1.1 Non-text Content]({UNDERSTANDING}).",
                },
                "defaultConfiguration": {"level": level},
                "properties": {
                    "tags": ["accessibility", "wcag", "wcag2a", "wcag111"],
                    "precision": "high",
                },
                "relationships": [
                    {
                        "target": {"id": "1.1.1", "toolComponent": {"name": "WCAG", "index": 0}},
                        "kinds": ["relevant"],
                    }
                ],
            }
        )
    results = []
    starts_cache: dict[Path, list[int]] = {}
    for page in run.pages:
        for f in page.findings:
            for p in f.problems:
                results.append(_sarif_result(f, p, rule_ids, page, starts_cache))
    for page in run.failed_pages:
        results.append(
            {
                "ruleId": "image-unreadable",
                "ruleIndex": rule_ids.index("image-unreadable"),
                "level": "warning",
                "kind": "fail",
                "message": {"text": page.error},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": _rel(page.path)}}}],
            }
        )
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": TOOL,
                        "semanticVersion": __version__,
                        "version": __version__,
                        "informationUri": INFO_URI,
                        "rules": rules,
                    }
                },
                "taxonomies": [
                    {
                        "name": "WCAG",
                        "version": "2.2",
                        "informationUri": "https://www.w3.org/TR/WCAG22/",
                        "taxa": [
                            {"id": "1.1.1", "name": "Non-text Content", "helpUri": UNDERSTANDING}
                        ],
                    }
                ],
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }


def _sarif_result(f: Finding, p, rule_ids: list[str], page, starts_cache) -> dict:
    e = f.element
    level = RULES[p.rule][3]
    text = p.message + "."
    if f.proposed is not None:
        text += (
            ' Proposed: alt="' + f.proposed + '".'
            if f.proposed
            else ' Proposed: alt="" (decorative).'
        )
    result = {
        "ruleId": p.rule,
        "ruleIndex": rule_ids.index(p.rule),
        "level": level,
        "message": {"text": text},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": _rel(e.file)},
                    "region": {
                        "startLine": e.line,
                        "startColumn": e.column,
                        "snippet": {"text": e.snippet},
                    },
                }
            }
        ],
        "taxa": [{"id": "1.1.1", "toolComponent": {"name": "WCAG", "index": 0}}],
        "properties": {"purpose": f.purpose, "wcag": "1.1.1", "needsPerson": needs_person(f)},
    }
    if f.changes and page.decoded is not None:
        starts = starts_cache.setdefault(page.path, line_starts(page.decoded.text))
        s_line, s_col = _line_col(starts, e.span.start)
        region = {"startLine": s_line, "startColumn": s_col}
        if e.span.mode == "value" and e.span.end > e.span.start:
            region["endLine"], region["endColumn"] = _line_col(starts, e.span.end)
        else:
            region["endLine"], region["endColumn"] = s_line, s_col
        from .write import Edit

        result["fixes"] = [
            {
                "description": {
                    "text": (
                        f"Draft for a person to check: {person_reason(f)}."
                        if needs_person(f)
                        else f"Set the text alternative ({f.reason})."
                    )
                },
                "artifactChanges": [
                    {
                        "artifactLocation": {"uri": _rel(e.file)},
                        "replacements": [
                            {
                                "deletedRegion": region,
                                "insertedContent": {"text": render(Edit(e.span, f.proposed))},
                            }
                        ],
                    }
                ],
            }
        ]
    return result


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;background:#fff;
margin:0 auto;max-width:75rem;padding:1rem 1.5rem;line-height:1.5}
h1{font-size:1.6rem}h2{font-size:1.3rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;font-size:.95rem}
caption{text-align:left;font-weight:600;padding:.4rem 0}
th,td{border:1px solid #767676;padding:.4rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f0f0}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;word-break:break-all}
.fix{color:#8a1c00;font-weight:600}.ok{color:#1d5b1d;font-weight:600}.manual{color:#5c3d00;font-weight:600}
.warn{border:2px solid #8a1c00;padding:.5rem 1rem;background:#fff4f0}
a{color:#0b4f9c}a:focus{outline:3px solid #1b1b1b;outline-offset:2px}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}
"""


def to_html(run: Run, max_chars: int) -> str:
    e = html.escape
    s = summary(run)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Alt text report (WCAG 1.1.1) - blipcap</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<header><h1>Alt text report</h1>",
        f'<p>Checked against <a href="{UNDERSTANDING}">WCAG 2.2 success criterion 1.1.1 Non-text Content</a> '
        f"(level A). Alt text limit: {max_chars} characters.</p></header>",
        "<main>",
    ]
    if run.random_weights:
        out.append(
            '<p class="warn" role="note"><strong>Test model.</strong> The captions in this report come from a '
            "model with random weights. They are not real descriptions of the images.</p>"
        )
    out.append("<h2>Summary</h2><dl>")
    for label, key in [
        ("Files", "files"),
        ("Files that could not be read", "files_failed"),
        ("Text alternatives found", "elements"),
        ("Fine as they are", "ok"),
        ("Need fixing", "to_fix"),
        ("Changes proposed", "proposed"),
        ("Ready to write without review", "ready"),
        ("Need a person", "manual"),
    ]:
        out.append(f"<dt>{e(label)}</dt><dd>{s[key]}</dd>")
    out.append("</dl>")
    if run.provenance:
        p = run.provenance
        out.append(
            f"<p>Captions: model <code>{e(str(p.get('model')))}</code>, revision "
            f"<code>{e(str(p.get('revision')))}</code>, {e(str(p.get('backend')))} on "
            f"{e(str(p.get('device')))}. Machine-generated text is marked as such.</p>"
        )
    for note in run.notes:
        out.append(f"<p>{e(note)}</p>")
    failed = run.failed_pages
    if failed:
        out.append("<h2>Files that could not be read</h2><ul>")
        out.extend(f"<li>{e(p.error or '')}</li>" for p in failed)
        out.append("</ul>")
    rows = [f for f in run.findings if needs_fixing(f) or f.changes or f.notes]
    out.append("<h2>Findings</h2>")
    if not rows:
        out.append("<p>Every text alternative is fine.</p>")
    else:
        out.append(
            "<table><caption>Text alternatives that need attention, in file order</caption>"
            '<thead><tr><th scope="col">Where</th><th scope="col">Image</th><th scope="col">Purpose</th>'
            '<th scope="col">Problems</th><th scope="col">Current alt</th><th scope="col">Proposed alt</th>'
            '<th scope="col">Why</th></tr></thead><tbody>'
        )
        for f in rows:
            el = f.element
            problems = "".join(
                f'<li><a href="{e(RULES[p.rule][2])}">{e(RULES[p.rule][0])}</a>: {e(p.message)}</li>'
                for p in f.problems
            )
            current = (
                "<em>none</em>"
                if el.alt is None
                else (f"<q>{e(el.alt)}</q>" if el.alt else "<em>empty</em>")
            )
            if f.proposed is None:
                proposed = '<span class="manual">needs a person</span>'
            elif f.proposed == "":
                proposed = "<em>empty (decorative)</em>"
            else:
                proposed = f"<q>{e(f.proposed)}</q>"
            if f.proposed is not None and needs_person(f):
                proposed += '<br><span class="manual">draft: needs a person</span>'
            why = e(f.reason) + "".join(f"<br>{e(n)}" for n in f.notes)
            if f.doubts and needs_person(f):
                why += "".join(f"<br>Needs a person: {e(d.message)}" for d in f.doubts)
            if f.image is not None and f.image.error:
                why += f"<br>Image: {e(f.image.error)}"
            out.append(
                f'<tr><th scope="row"><code>{e(_rel(el.file))}:{el.line}:{el.column}</code></th>'
                f"<td><code>{e(el.src or el.kind)}</code></td><td>{e(f.purpose)}</td><td><ul>{problems}</ul></td>"
                f"<td>{current}</td><td>{proposed}</td><td>{why}</td></tr>"
            )
        out.append("</tbody></table>")
    out += [
        "</main>",
        f"<footer><p>Made by blipcap {e(__version__)}. Proposed alt text is machine-generated: "
        "review it before publishing.</p></footer>",
        "</body></html>",
        "",
    ]
    return "\n".join(out)


def write_report(path: Path, run: Run, max_chars: int) -> None:
    suffix = path.suffix.lower()
    if suffix == ".sarif" or path.name.lower().endswith(".sarif.json"):
        text = json.dumps(to_sarif(run), indent=2, ensure_ascii=False) + "\n"
    elif suffix == ".json":
        text = json.dumps(to_json(run, max_chars), indent=2, ensure_ascii=False) + "\n"
    elif suffix in (".html", ".htm"):
        text = to_html(run, max_chars)
    else:
        from ..errors import OptionsError

        raise OptionsError(f"report {path}: use a .json, .html or .sarif file name")
    path.write_text(text, encoding="utf-8")
