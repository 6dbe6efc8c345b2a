"""Reading order: OCR lines ordered as a person reads them, and joined into text."""

from __future__ import annotations

from collections.abc import Sequence

from .lines import OcrLine


def reading_order(lines: Sequence[OcrLine]) -> list[OcrLine]:
    """Order lines as a person reads them: recursive X-Y cut.

    A region is split at a vertical gap (a column gutter) when one exists,
    else at its widest horizontal gap; what cannot be split is one row, read
    left to right. A full-width heading above two columns is therefore read
    first, then the left column, then the right one.
    """
    if len(lines) <= 1:
        return list(lines)
    heights = sorted(max(ln.height, 1) for ln in lines)
    min_gutter = heights[len(heights) // 2]  # a gutter is at least about one line high
    return _xy_cut(list(lines), min_gutter)


def _gaps(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The empty intervals between the union of ``spans``, as (start, end)."""
    spans = sorted(spans)
    gaps, reach = [], spans[0][1]
    for start, end in spans[1:]:
        if start > reach:
            gaps.append((reach, start))
        reach = max(reach, end)
    return gaps


def _xy_cut(lines: list[OcrLine], min_gutter: int) -> list[OcrLine]:
    if len(lines) <= 1:
        return lines
    vertical = [
        g for g in _gaps([(ln.box[0], ln.box[2]) for ln in lines]) if g[1] - g[0] >= min_gutter
    ]
    if vertical:
        cut = max(vertical, key=lambda g: g[1] - g[0])[0]
        left = [ln for ln in lines if ln.box[2] <= cut]
        right = [ln for ln in lines if ln.box[2] > cut]
        return _xy_cut(left, min_gutter) + _xy_cut(right, min_gutter)
    # Boxes of neighbouring lines often overlap by a few pixels (slanted scans):
    # cut where the line centres are far apart instead of requiring empty space.
    ordered = sorted(lines, key=lambda ln: (ln.box[1] + ln.box[3]) / 2)
    best, best_gap = None, 0.0
    for i in range(1, len(ordered)):
        a, b = ordered[i - 1], ordered[i]
        gap = (b.box[1] + b.box[3]) / 2 - (a.box[1] + a.box[3]) / 2
        if gap > 0.5 * min(a.height, b.height) and gap > best_gap:
            best, best_gap = i, gap
    if best is None:  # one row: read left to right
        return sorted(lines, key=lambda ln: ln.box[0])
    return _xy_cut(ordered[:best], min_gutter) + _xy_cut(ordered[best:], min_gutter)


def lines_to_text(lines: Sequence[OcrLine]) -> str:
    """Join ordered lines: words on one row share a line; a blank line separates paragraphs.

    A new paragraph starts where the vertical gap to the previous row is more
    than one and a half line heights (a blank line even in double-spaced text),
    or where reading jumps back up (a new column).
    """
    rows: list[list[OcrLine]] = []
    for ln in lines:
        prev = rows[-1][-1] if rows else None
        same_row = (
            prev is not None
            and ln.box[0]
            >= prev.box[2] - 0.25 * min(ln.height, prev.height)  # boxes of words touch
            and abs((ln.box[1] + ln.box[3]) - (prev.box[1] + prev.box[3])) / 2
            < 0.5 * min(ln.height, prev.height)
        )
        if same_row:
            rows[-1].append(ln)
        else:
            rows.append([ln])
    out: list[str] = []
    prev_box: tuple[int, int, int, int] | None = None
    for row in rows:
        box = (
            min(r.box[0] for r in row),
            min(r.box[1] for r in row),
            max(r.box[2] for r in row),
            max(r.box[3] for r in row),
        )
        if prev_box is not None:
            line_h = min(box[3] - box[1], prev_box[3] - prev_box[1])
            gap = box[1] - prev_box[3]
            if gap > 1.5 * line_h or box[3] <= prev_box[1]:
                out.append("")
        out.append(" ".join(r.text for r in row))
        prev_box = box
    return "\n".join(out)
