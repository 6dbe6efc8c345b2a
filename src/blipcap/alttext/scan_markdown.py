"""Find the images of a Markdown file: inline, reference-style, and raw HTML.

Code blocks, code spans, HTML comments and front matter are masked first
(replaced by spaces of the same length, newlines kept) so that offsets, lines
and columns stay those of the original text while nothing inside code is
mistaken for an image. Link text is matched with nested brackets and
backslash escapes as CommonMark does.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .encoding import line_starts
from .model import Context, Element, Span
from .scan_html import line_col, scan_html

_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})")
_REF_DEF = re.compile(
    r"^ {0,3}\[((?:[^\]\\]|\\.)+)\]:[ \t]*\r?\n?[ \t]*(<[^>\n]*>|\S+)"
    r"(?:[ \t]*\r?\n?[ \t]*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|\((?:[^)\\]|\\.)*\)))?[ \t]*\r?$",
    re.MULTILINE,
)
_ESCAPABLE = r"""!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~"""
_SPACE = re.compile(r"\s+")


def _blank(text: str, start: int, end: int) -> str:
    return "".join("\n" if c == "\n" else " " for c in text[start:end])


def mask_code(text: str) -> str:
    """``text`` with code blocks, code spans, comments and front matter blanked out."""
    out = list(text)
    _mask_blocks(text, out)
    _mask_comments(out)
    _mask_code_spans(out)
    return "".join(out)


def _blank_out(out: list[str], start: int, end: int) -> None:
    for i in range(start, end):
        if out[i] != "\n":
            out[i] = " "


def _front_matter_lines(lines: list[str]) -> int:
    """How many lines a YAML block fenced by --- at the very top takes (0 when none)."""
    if lines and lines[0].rstrip("\r\n") == "---":
        for j in range(1, len(lines)):
            if lines[j].rstrip("\r\n") in ("---", "..."):
                return j + 1
    return 0


def _fence_close(lines: list[str], i: int, marker: str) -> int:
    """Index of the line closing the fence opened by ``marker`` on line ``i`` (len(lines) if none)."""
    j = i + 1
    while j < len(lines):
        close = _FENCE.match(lines[j])
        if (
            close
            and close.group(2)[0] == marker[0]
            and len(close.group(2)) >= len(marker)
            and not lines[j].strip().strip(marker[0])
        ):
            break
        j += 1
    return j


def _mask_blocks(text: str, out: list[str]) -> None:
    """Blank front matter, fenced code blocks and indented code blocks."""
    lines = text.splitlines(keepends=True)
    offsets = []
    pos = 0
    for line in lines:
        offsets.append(pos)
        pos += len(line)
    i = _front_matter_lines(lines)
    if i:
        _blank_out(out, 0, offsets[i - 1] + len(lines[i - 1]))
    previous_blank = True
    in_list = False
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            j = _fence_close(lines, i, fence.group(2))
            end = offsets[j] + len(lines[j]) if j < len(lines) else len(text)
            _blank_out(out, offsets[i], end)
            i = j + 1
            previous_blank = True
            continue
        stripped = line.strip()
        if re.match(r"^\s{0,3}(?:[-*+]|\d+[.)])\s", line):
            in_list = True
        elif not stripped:
            pass
        elif not line[:1].isspace():
            in_list = False
        # An indented code block starts after a blank line, outside a list.
        if previous_blank and not in_list and line.startswith(("    ", "\t")) and stripped:
            j = i
            while j < len(lines) and (lines[j].startswith(("    ", "\t")) or not lines[j].strip()):
                j += 1
            _blank_out(out, offsets[i], offsets[j - 1] + len(lines[j - 1]))
            i = j
            previous_blank = True
            continue
        previous_blank = not stripped
        i += 1


def _mask_comments(out: list[str]) -> None:
    for m in re.finditer(r"<!--.*?-->", "".join(out), re.DOTALL):
        _blank_out(out, m.start(), m.end())


def _mask_code_spans(out: list[str]) -> None:
    """Code spans: a run of n backticks up to the next run of exactly n."""
    masked = "".join(out)
    k = 0
    while True:
        m = re.compile(r"(?<![`\\])(`+)(?!`)").search(masked, k)
        if not m:
            break
        run = m.group(1)
        close = re.compile(r"(?<!`)" + run + r"(?!`)").search(masked, m.end())
        if not close:
            k = m.end()
            continue
        _blank_out(out, m.start(), close.end())
        masked = "".join(out)
        k = close.end()


def _match_bracket(text: str, open_at: int) -> int | None:
    """Index of the "]" closing the "[" at ``open_at`` (nesting and escapes honoured)."""

    def blank_line(i: int) -> bool:  # a blank line ends the paragraph
        return text[i] == "\n" and i + 1 < len(text) and text[i + 1] in "\r\n"

    end, closed = _balanced(text, open_at + 1, "[]", blank_line)
    return end if closed else None


def _balanced(text: str, i: int, pair: str, stop: Callable[[int], bool]) -> tuple[int, bool]:
    """Scan from ``i``, just inside ``pair[0]``, to the ``pair[1]`` that balances it, skipping
    backslash escapes: (its index, True); or (where ``stop`` held or the text ended, False)."""
    depth = 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if stop(i):
            return i, False
        if c == pair[0]:
            depth += 1
        elif c == pair[1]:
            depth -= 1
            if depth == 0:
                return i, True
        i += 1
    return i, False


def _inline_target(text: str, at: int) -> tuple[str, str | None, int] | None:
    """Parse ``(dest "title")`` starting at the "(" at ``at``: (dest, title, end index)."""
    n = len(text)
    i = at + 1
    while i < n and text[i] in " \t\r\n":
        i += 1
    if i < n and text[i] == "<":
        close = text.find(">", i)
        if close == -1 or "\n" in text[i:close]:
            return None
        dest = text[i + 1 : close]
        i = close + 1
    else:
        start = i
        i, _ = _balanced(text, i, "()", lambda j: text[j].isspace())
        dest = text[start:i]
    while i < n and text[i] in " \t\r\n":
        i += 1
    title = None
    if i < n and text[i] in "\"'(":
        closer = ")" if text[i] == "(" else text[i]
        j = i + 1
        while j < n and text[j] != closer:
            j += 2 if text[j] == "\\" else 1
        if j >= n:
            return None
        title = _unescape(text[i + 1 : j])
        i = j + 1
        while i < n and text[i] in " \t\r\n":
            i += 1
    if i < n and text[i] == ")":
        return _unescape(dest), title, i + 1
    return None


def _unescape(s: str) -> str:
    s = re.sub(r"\\([" + re.escape(_ESCAPABLE) + "])", r"\1", s)
    return html.unescape(s)


def normalize_label(label: str) -> str:
    return _SPACE.sub(" ", label.strip()).casefold()


def alt_plain_text(raw: str) -> str:
    """The plain text a Markdown renderer makes of ``raw`` (an image description, a paragraph)."""
    return _SPACE.sub(" ", _unescape(_strip_inline(raw))).strip()


def _strip_inline(s: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i : i + 2])
            i += 2
            continue
        if c == "[":
            close = _match_bracket(s, i)
            if close is not None:
                after = close + 1
                end = None
                if after < len(s) and s[after] == "(":
                    parsed = _inline_target(s, after)
                    end = parsed[2] if parsed else None
                elif after < len(s) and s[after] == "[":
                    m = re.compile(r"\[(?:[^\]\\]|\\.)*\]").match(s, after)
                    end = m.end() if m else None
                if end is not None:  # a link or image: keep its text
                    if out and out[-1] == "!":
                        out.pop()
                    out.append(_strip_inline(s[i + 1 : close]))
                    i = end
                    continue
        out.append(c)
        i += 1
    text = "".join(out)
    text = re.sub(r"(?<!\\)(\*{1,3}|_{1,3})(?=\S)(.+?)(?<=\S)\1", r"\2", text)
    return re.sub(r"(?<!\\)`+", "", text)


def escape_alt(text: str) -> str:
    """Escape new alt text for a Markdown image description."""
    out = re.sub(r"([\\\[\]*_`<])", r"\\\1", text)
    # "&name;" would be read as an entity.
    return re.sub(r"&(?=#?\w+;)", r"\\&", out)


def reference_definitions(masked: str) -> dict[str, tuple[str, str | None]]:
    refs: dict[str, tuple[str, str | None]] = {}
    for m in _REF_DEF.finditer(masked):
        dest = m.group(2)
        if dest.startswith("<"):
            dest = dest[1:-1]
        title = m.group(3)[1:-1] if m.group(3) else None
        refs.setdefault(
            normalize_label(m.group(1)), (_unescape(dest), _unescape(title) if title else None)
        )
    return refs


@dataclass
class _Link:
    start: int  # "[" of the link text
    text_end: int  # its "]"
    end: int
    href: str | None
    title: str | None


def _paragraph(masked: str, at: int) -> tuple[int, int]:
    before = max(masked.rfind("\n\n", 0, at), masked.rfind("\n\r\n", 0, at))
    start = 0 if before == -1 else before + 1
    m = re.compile(r"\n[ \t]*\r?\n").search(masked, at)
    return start, (m.start() if m else len(masked))


def _plain(s: str) -> str:
    s = re.sub(r"^\s{0,3}#{1,6}\s*", "", s, flags=re.MULTILINE)
    s = re.sub(r"^\s{0,3}(?:[-*+>]|\d+[.)])\s+", "", s, flags=re.MULTILINE)
    return alt_plain_text(s)


_Image = tuple[int, int, int, str, str | None, str]  # start, alt_start, alt_end, src, title, form


def scan_markdown(text: str, file: Path) -> list[Element]:
    """Every image of a Markdown document (including raw HTML ones), in document order."""
    masked = mask_code(text)
    starts = line_starts(text)
    images, links = _images_and_links(masked, reference_definitions(masked))
    found = [_md_element(text, masked, file, starts, image, links) for image in images]
    if "<" in masked:
        found.extend(e for e in scan_html(masked, file) if e.kind != "md-image")
        for e in found:
            if e.kind != "md-image":
                # Snippets come from the masked text; positions are the same in the original.
                e.snippet = (
                    text[e.offset : e.offset + len(e.snippet)]
                    if not e.snippet.endswith("…")
                    else e.snippet
                )
    found.sort(key=lambda e: e.offset)
    return found


def _images_and_links(
    masked: str, refs: dict[str, tuple[str, str | None]]
) -> tuple[list[_Image], list[_Link]]:
    images: list[_Image] = []
    links: list[_Link] = []
    i = 0
    while True:
        i = masked.find("[", i)
        if i == -1:
            break
        if i > 0 and masked[i - 1] == "\\":
            i += 1
            continue
        close = _match_bracket(masked, i)
        if close is None:
            i += 1
            continue
        is_image = i > 0 and masked[i - 1] == "!" and not (i > 1 and masked[i - 2] == "\\")
        target, end = _bracket_target(masked, i, close, refs)
        if target is None:
            i += 1
            continue
        if is_image:
            images.append((i - 1, i + 1, close, target[0], target[1], target[2]))
        else:
            links.append(_Link(i, close, end, target[0], target[1]))
        # Keep scanning inside the link text: it may hold an image.
        i += 1
    return images, links


def _bracket_target(
    masked: str, i: int, close: int, refs: dict[str, tuple[str, str | None]]
) -> tuple[tuple[str, str | None, str] | None, int]:
    """What the brackets at ``i``..``close`` point to, (src, title, form), and where they end."""
    if close + 1 < len(masked) and masked[close + 1] == "(":
        parsed = _inline_target(masked, close + 1)
        if parsed:
            return (parsed[0], parsed[1], "inline"), parsed[2]
    label = masked[i + 1 : close]
    form = "shortcut"
    end = close + 1
    m = re.compile(r"\[((?:[^\]\\]|\\.)*)\]").match(masked, close + 1)
    if m:
        form = "full" if m.group(1).strip() else "collapsed"
        label = m.group(1) if m.group(1).strip() else label
        end = m.end()
    ref = refs.get(normalize_label(label))
    if ref is None:
        return None, close + 1
    return (ref[0], ref[1], form), end


def _md_element(
    text: str, masked: str, file: Path, starts: list[int], image: _Image, links: list[_Link]
) -> Element:
    start, alt_start, alt_end, src, title, form = image
    line, col = line_col(starts, start)
    snippet = text[start : _image_end(masked, alt_end)]
    if len(snippet) > 200:
        snippet = snippet[:199] + "…"
    return Element(
        file=file,
        kind="md-image",
        line=line,
        column=col,
        offset=start,
        snippet=snippet,
        alt=alt_plain_text(text[alt_start:alt_end]),
        span=Span("value", alt_start, alt_end, quote="", attr="markdown"),
        src=src or None,
        sources=[src] if src else [],
        attrs={"src": src, "title": title, "form": form},
        context=_md_context(masked, start, alt_end, links),
        name_from="markdown",
    )


def _md_context(masked: str, start: int, alt_end: int, links: list[_Link]) -> Context:
    ctx = Context()
    link = next((lk for lk in links if lk.start < start and alt_end < lk.text_end), None)
    if link is not None:
        ctx.control = "a"
        ctx.link_href = link.href
        ctx.link_title = link.title
        ctx.control_text = _plain(
            masked[link.start + 1 : start]
            + " "
            + masked[_image_end(masked, alt_end) : link.text_end]
        )
    p_start, p_end = _paragraph(masked, start)
    pivot_start = link.start if link is not None else start
    pivot_end = link.end if link is not None else _image_end(masked, alt_end)
    ctx.text_before = _plain(masked[p_start:pivot_start])[-300:]
    ctx.text_after = _plain(masked[pivot_end:p_end])[:300]
    if not ctx.text_before and not ctx.text_after:
        # A standalone image followed by an all-emphasis paragraph: the usual Markdown caption.
        ns = p_end
        while ns < len(masked) and masked[ns] in "\r\n \t":
            ns += 1
        _, ne = _paragraph(masked, ns) if ns < len(masked) else (0, ns)
        nxt = masked[ns:ne].strip()
        if re.fullmatch(r"(\*{1,2}|_{1,2})[^\n]+?\1", nxt):
            ctx.figcaption = _plain(nxt)
    return ctx


def _image_end(masked: str, alt_end: int) -> int:
    """End of an image whose description closes at ``alt_end``."""
    if alt_end + 1 < len(masked) and masked[alt_end + 1] == "(":
        parsed = _inline_target(masked, alt_end + 1)
        if parsed:
            return parsed[2]
    m = re.compile(r"\[((?:[^\]\\]|\\.)*)\]").match(masked, alt_end + 1)
    return m.end() if m else alt_end + 1
