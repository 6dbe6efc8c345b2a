"""Free-text helpers of the SQLite store: FTS5 match expressions, snippets and date keys."""

from __future__ import annotations

from .store import query_terms


def date_key(iso: str | None) -> int:
    """'2021-07-04T18:30:00' -> 20210704183000 (comparable as integers); None or '' -> -1."""
    if not iso:
        return -1
    digits = "".join(ch for ch in iso[:19] if ch.isdigit())
    return int(digits.ljust(14, "0")[:14]) if digits else -1


def highlight(text: str, query: str, width: int = 160) -> str:
    """The part of ``text`` around the first query word found inside it (also inside a
    longer word), with every found word in brackets; '' when none is found."""
    flat = " ".join((text or "").split())
    lower = flat.lower()
    spans = []
    for term in (t for t in query_terms(query) if len(t) >= 3):
        start = lower.find(term)
        while start != -1:
            spans.append((start, start + len(term)))
            start = lower.find(term, start + len(term))
    if not spans:
        return ""
    spans.sort()
    first = spans[0][0]
    lo = max(0, first - width // 3)
    hi = min(len(flat), lo + width)
    out, at = [], lo
    for a, b in spans:
        if a < at or b > hi:
            continue
        out += [flat[at:a], "[", flat[a:b], "]"]
        at = b
    out.append(flat[at:hi])
    return ("…" if lo > 0 else "") + "".join(out) + ("…" if hi < len(flat) else "")


def fts_match(query: str) -> str | None:
    """An FTS5 MATCH expression for free text: any of the words, each quoted (no operators).

    OR rather than AND: BM25 already ranks documents that contain more of the
    words higher, and one word missing from a caption must not hide a photo.
    """
    terms = query_terms(query)
    if not terms:
        return None
    return " OR ".join(f'"{t}"' for t in dict.fromkeys(terms))
