"""Alt text for web pages: find, judge, propose, review, write and report (WCAG 1.1.1).

>>> from blipcap.alttext import run_alt_text, AltTextOptions
>>> run = run_alt_text(["site/"])            # doctest: +SKIP  (markup-only check)
>>> [f.element.where for f in run.to_fix]    # doctest: +SKIP

Modules, one concern each: ``scan_html`` / ``scan_markdown`` (find text
alternatives with source positions), ``rules`` (bad alt text, WCAG rule
table), ``judge`` (purpose and proposal, after the W3C alt decision tree),
``sources`` (resolve and read images, OCR, captioner adapter), ``cache``
(captions by image hash), ``engine`` (the pipeline), ``write`` (byte-exact
edits, diffs, atomic writes), ``review`` (CSV/JSON review and apply),
``report`` (JSON, HTML, SARIF).
"""

from __future__ import annotations

from .engine import AltTextOptions, Run, run_alt_text
from .model import Element, Finding, Problem

__all__ = ["AltTextOptions", "Element", "Finding", "Problem", "Run", "run_alt_text"]
