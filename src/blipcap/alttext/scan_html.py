"""Find every text alternative in an HTML document, with exact source positions.

Python's ``html.parser`` gives each start tag's line and column and its raw
text; a small tokenizer (following the HTML spec's attribute states) finds
the character offsets of the ``alt`` value inside that raw text, or where a
new attribute goes. A light element tree built on the way supplies the
context the purpose decision needs: the enclosing link or button, the
figure's caption, the text next to the image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from .encoding import line_starts
from .model import Context, Element, Span

VOID = frozenset(
    "area base br col embed hr img input link meta param source track wbr keygen".split()
)
# Raw-text and escapable-raw-text elements (HTML standard, scripting assumed): their content
# is text up to the matching end tag, never elements - a code sample in a <textarea> has no
# <img>. <plaintext> runs to the end of the document.
RAW_TEXT = (
    "script",
    "style",
    "textarea",
    "title",
    "xmp",
    "iframe",
    "noembed",
    "noframes",
    "noscript",
)
_NEVER = re.compile(r"(?!)")
# Elements whose text is not page text.
_NOT_TEXT = frozenset(["script", "style", "template", "noscript", "title", "head"])
# Inline elements: text inside their parent block counts as "next to" the image.
_INLINE = frozenset(
    "a abbr b bdi bdo cite code data dfn em i kbd mark picture q s samp small span strong "
    "sub sup time u var label".split()
)
# Start tags that close an open element of the same kind (HTML's implied end tags).
_SELF_CLOSING_PEERS = {
    "p": {"p"},
    "li": {"li"},
    "dt": {"dt", "dd"},
    "dd": {"dt", "dd"},
    "tr": {"tr", "td", "th"},
    "td": {"td", "th"},
    "th": {"td", "th"},
    "option": {"option"},
}
_BLOCK_CLOSES_P = frozenset(
    "address article aside blockquote details div dl fieldset figcaption figure footer form "
    "h1 h2 h3 h4 h5 h6 header hr main nav ol p pre section table ul".split()
)
_SPACE = re.compile(r"\s+")
_SNIPPET = 200


@dataclass(eq=False)
class Node:
    tag: str
    attrs: dict[str, str | None]
    offset: int  # character offset of "<"
    raw: str  # the start tag as written
    parent: Node | None = None
    children: list[Node | str] = field(default_factory=list)

    def ancestors(self):
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def closest(self, *tags: str) -> Node | None:
        for node in self.ancestors():
            if node.tag in tags:
                return node
        return None

    def iter(self):
        for child in self.children:
            if isinstance(child, Node):
                yield child
                yield from child.iter()


@dataclass(frozen=True)
class RawAttr:
    name: str  # lower-cased
    name_start: int
    name_end: int
    value_start: int | None  # None: no value ("<img alt>")
    value_end: int | None
    quote: str  # '"', "'" or "" (unquoted)


def tokenize_attrs(raw: str) -> list[RawAttr]:
    """Attributes of a raw start tag with their offsets in ``raw`` (HTML spec attribute states)."""
    n = len(raw)
    i = 1
    while i < n and not (raw[i].isspace() or raw[i] in "/>"):
        i += 1  # tag name
    out: list[RawAttr] = []
    while i < n:
        while i < n and (raw[i].isspace() or raw[i] == "/"):
            i += 1
        if i >= n or raw[i] == ">":
            break
        name_start = i
        i += 1  # a leading "=" belongs to the name
        while i < n and not (raw[i].isspace() or raw[i] in "/>="):
            i += 1
        name_end = i
        j = i
        while j < n and raw[j].isspace():
            j += 1
        if j < n and raw[j] == "=":
            j += 1
            while j < n and raw[j].isspace():
                j += 1
            if j < n and raw[j] in "\"'":
                quote = raw[j]
                close = raw.find(quote, j + 1)
                close = n if close == -1 else close
                out.append(
                    RawAttr(
                        raw[name_start:name_end].lower(), name_start, name_end, j + 1, close, quote
                    )
                )
                i = close + 1
            else:
                k = j
                while k < n and not (raw[k].isspace() or raw[k] == ">"):
                    k += 1
                out.append(
                    RawAttr(raw[name_start:name_end].lower(), name_start, name_end, j, k, "")
                )
                i = k
        else:
            out.append(
                RawAttr(raw[name_start:name_end].lower(), name_start, name_end, None, None, "")
            )
    return out


class _TreeBuilder(HTMLParser):
    CDATA_CONTENT_ELEMENTS = RAW_TEXT  # html.parser only knows script and style

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.starts = line_starts(text)
        self.root = Node("#root", {}, 0, "")
        self.current = self.root

    def _node(self, tag: str, attrs: list[tuple[str, str | None]]) -> Node:
        line, col = self.getpos()
        merged: dict[str, str | None] = {}
        for name, value in attrs:
            merged.setdefault(name, value)  # the first of duplicate attributes wins, as in browsers
        raw = self.get_starttag_text() or ""
        return Node(tag, merged, self.starts[line - 1] + col, raw)

    def _close_implied(self, tag: str) -> None:
        peers = _SELF_CLOSING_PEERS.get(tag)
        if peers and self.current.tag in peers:
            self.current = self.current.parent or self.root
        elif tag in _BLOCK_CLOSES_P and self.current.tag == "p":
            self.current = self.current.parent or self.root

    def handle_starttag(self, tag, attrs):
        self._close_implied(tag)
        node = self._node(tag, attrs)
        node.parent = self.current
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node
        if tag == "plaintext":  # no end tag ends it
            self.cdata_elem, self.interesting = tag, _NEVER

    def parse_html_declaration(self, i: int) -> int:
        """``<![...`` (CDATA outside SVG/MathML included) is a bogus comment ending at ``>``.

        That is how the HTML standard reads it; html.parser asserts on odd ones (``<![<``).
        """
        if not self.rawdata.startswith("<![", i):
            return super().parse_html_declaration(i)
        end = self.rawdata.find(">", i + 3)
        return -1 if end < 0 else end + 1

    def handle_startendtag(self, tag, attrs):
        self._close_implied(tag)
        node = self._node(tag, attrs)
        node.parent = self.current
        self.current.children.append(node)

    def handle_endtag(self, tag):
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.current = node.parent or self.root

    def handle_data(self, data):
        self.current.children.append(data)


def parse(text: str) -> Node:
    """The element tree of ``text`` (a forgiving, position-keeping parse)."""
    builder = _TreeBuilder(text)
    builder.feed(text)
    builder.close()
    return builder.root


def text_of(node: Node, skip: Node | None = None, *, alts: bool = True) -> str:
    """Visible text of ``node``: text nodes plus (with ``alts``) the alt of images, minus ``skip``."""
    parts: list[str] = []

    def walk(n: Node) -> None:
        for child in n.children:
            if isinstance(child, str):
                parts.append(child)
            elif (
                child is skip or child.tag in _NOT_TEXT or child.attrs.get("aria-hidden") == "true"
            ):
                continue
            elif child.tag == "img":
                parts.append(" " + ((child.attrs.get("alt") or "") if alts else "") + " ")
            else:
                parts.append(" " if child.tag not in _INLINE else "")
                walk(child)
                parts.append(" " if child.tag not in _INLINE else "")

    walk(node)
    return _SPACE.sub(" ", "".join(parts)).strip()


def _adjacent(node: Node) -> tuple[str, str]:
    """Text just before and after ``node`` inside its nearest block ancestor."""
    pivot = node
    while pivot.parent is not None and pivot.parent.tag in _INLINE:
        pivot = pivot.parent
    parent = pivot.parent
    if parent is None:
        return "", ""
    index = next(i for i, c in enumerate(parent.children) if c is pivot)

    def chunk(items: list[Node | str]) -> str:
        holder = Node("#frag", {}, 0, "", children=items)
        # Other images' alt is not "text next to" this image: neighbours may share a caption.
        return text_of(holder, alts=False)

    def is_block(item: Node | str) -> bool:
        return isinstance(item, Node) and item.tag not in _INLINE and item.tag not in VOID

    # Only the run of inline content around the image: another paragraph is not "next to" it.
    start = index
    while start > 0 and not is_block(parent.children[start - 1]):
        start -= 1
    end = index + 1
    while end < len(parent.children) and not is_block(parent.children[end]):
        end += 1
    before = chunk(parent.children[start:index])
    after = chunk(parent.children[index + 1 : end])
    return before[-300:], after[:300]


def _srcset_urls(value: str | None) -> list[str]:
    """URLs of a srcset, largest candidate first (by w, then x descriptor; HTML spec parse)."""
    if not value:
        return []
    candidates: list[tuple[float, str]] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and (value[i].isspace() or value[i] == ","):
            i += 1
        j = i
        while j < n and not value[j].isspace():
            j += 1
        url = value[i:j]
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            k = value.find(",", j)
            k = n if k == -1 else k
            descriptor = value[j:k].strip()
            j = k
        i = j + 1
        if not url:
            continue
        size = 1.0
        d = descriptor.split()[0] if descriptor else ""
        try:
            if d.endswith("w"):
                size = float(d[:-1])
            elif d.endswith("x"):
                size = float(d[:-1]) * 1000  # a density beats any small width
        except ValueError:
            pass
        candidates.append((size, url))
    candidates.sort(key=lambda c: -c[0])
    return [u for _, u in candidates]


def _is_placeholder(url: str) -> bool:
    # Lazy-loading pages put a tiny data: GIF/SVG in src and the real image elsewhere.
    return url.startswith("data:") and len(url) < 200


def _sources(node: Node) -> list[str]:
    a = node.attrs
    urls: list[str] = []
    for url in (
        [a.get("src")]
        + _srcset_urls(a.get("srcset"))
        + [a.get("data-src"), a.get("data-lazy-src"), a.get("data-original")]
        + _srcset_urls(a.get("data-srcset"))
    ):
        if url and url.strip() and url.strip() not in urls:
            urls.append(url.strip())
    picture = node.parent if node.parent is not None and node.parent.tag == "picture" else None
    if picture is not None:
        for child in picture.children:
            if isinstance(child, Node) and child.tag == "source":
                for url in _srcset_urls(child.attrs.get("srcset")):
                    if url not in urls:
                        urls.append(url)
    real = [u for u in urls if not _is_placeholder(u)]
    return real + [u for u in urls if _is_placeholder(u)] if real else urls


def _background_url(style: str | None) -> str | None:
    if not style:
        return None
    m = re.search(r"background(?:-image)?\s*:[^;]*url\(\s*['\"]?([^'\")]+)['\"]?\s*\)", style)
    return m.group(1).strip() if m else None


def _span_for(node: Node, attr: str, after: tuple[str, ...] = ("src",)) -> Span:
    """Where ``attr``'s value is, or where to insert it (after ``src``, else after the tag name)."""
    tokens = tokenize_attrs(node.raw)
    for t in tokens:
        if t.name == attr:
            if t.value_start is None:
                return Span("bare", node.offset + t.name_end, node.offset + t.name_end, attr=attr)
            return Span(
                "value", node.offset + t.value_start, node.offset + t.value_end, t.quote, attr
            )
    quote = next((t.quote for t in tokens if t.quote), '"')
    anchor = None
    for name in after:
        anchor = next((t for t in tokens if t.name == name), None)
        if anchor is not None:
            break
    if anchor is not None:
        end = (
            anchor.value_end + (1 if anchor.quote else 0)
            if anchor.value_end is not None
            else anchor.name_end
        )
    else:
        end = 1
        while end < len(node.raw) and not (node.raw[end].isspace() or node.raw[end] in "/>"):
            end += 1
    return Span("insert", node.offset + end, node.offset + end, quote, attr)


def _labelledby(node: Node, ids: dict[str, Node]) -> str:
    refs = (node.attrs.get("aria-labelledby") or "").split()
    return " ".join(text_of(ids[r]) for r in refs if r in ids).strip()


def _context(node: Node, ids: dict[str, Node]) -> Context:
    ctx = Context()
    control = node.closest("a", "button")
    if control is not None and (control.tag == "button" or control.attrs.get("href") is not None):
        ctx.control = control.tag
        ctx.link_href = control.attrs.get("href")
        ctx.link_title = (control.attrs.get("title") or "").strip() or None
        ctx.link_label = (
            (control.attrs.get("aria-label") or "").strip() or _labelledby(control, ids) or None
        )
        ctx.control_text = text_of(control, skip=node)
    elif node.tag == "area":
        ctx.control = "area"
        ctx.link_href = node.attrs.get("href")
        ctx.link_title = (node.attrs.get("title") or "").strip() or None
    elif node.tag == "input":
        ctx.control = "input"
        ctx.link_title = (node.attrs.get("title") or "").strip() or None
        ctx.link_label = (node.attrs.get("value") or "").strip() or None
    figure = node.closest("figure")
    if figure is not None:
        cap = next((n for n in figure.iter() if n.tag == "figcaption"), None)
        if cap is not None:
            ctx.figcaption = text_of(cap) or None
    ctx.text_before, ctx.text_after = _adjacent(node)
    form = node.closest("form")
    if form is not None:
        ctx.form_action = form.attrs.get("action")
    m = node.closest("map")
    if m is not None:
        ctx.map_name = m.attrs.get("name") or m.attrs.get("id")
    ctx.described = bool(node.attrs.get("aria-describedby") or node.attrs.get("longdesc"))
    return ctx


def line_col(starts: list[int], offset: int) -> tuple[int, int]:
    import bisect

    line = bisect.bisect_right(starts, offset)
    return line, offset - starts[line - 1] + 1


def scan_html(text: str, file: Path, *, root: Node | None = None) -> list[Element]:
    """Every element whose text alternative matters, in document order."""
    root = root or parse(text)
    starts = line_starts(text)
    ids = {n.attrs["id"]: n for n in root.iter() if n.attrs.get("id")}
    found: list[Element] = []
    for node in root.iter():
        a = node.attrs
        role = (a.get("role") or "").strip().lower()
        kind = None
        if node.tag == "img":
            kind = "img"
        elif node.tag == "input" and (a.get("type") or "").strip().lower() == "image":
            kind = "input-image"
        elif node.tag == "area":
            if a.get("href") is None:
                continue  # an area without href is not a link and needs no alt
            kind = "area"
        elif role == "img":
            kind = "svg-img" if node.tag == "svg" else "role-img"
        if kind is None:
            continue
        line, col = line_col(starts, node.offset)
        label = (a.get("aria-label") or "").strip()
        labelledby = _labelledby(node, ids)
        if kind in ("role-img", "svg-img"):
            title_child = ""
            if kind == "svg-img":
                t = next(
                    (c for c in node.children if isinstance(c, Node) and c.tag == "title"), None
                )
                title_child = text_of(t) if t is not None else ""
            if labelledby:
                alt, name_from, span = labelledby, "aria-labelledby", None
            elif a.get("aria-label") is not None:
                alt, name_from = a.get("aria-label") or "", "aria-label"
                span = _span_for(node, "aria-label")
            elif title_child or (a.get("title") or "").strip():
                alt, name_from = title_child or (a.get("title") or "").strip(), "title"
                span = _span_for(node, "aria-label", after=("role",))
            else:
                alt, name_from = None, "aria-label"
                span = _span_for(node, "aria-label", after=("role",))
            sources = [u for u in [_background_url(a.get("style"))] if u]
        else:
            if labelledby:
                alt, name_from, span = labelledby, "aria-labelledby", None
            elif label:
                alt, name_from, span = label, "aria-label", _span_for(node, "aria-label")
            else:
                raw_alt = a.get("alt", False)
                alt = None if raw_alt is False else (raw_alt or "")
                name_from, span = "alt", _span_for(node, "alt")
            sources = _sources(node)
        snippet = node.raw if len(node.raw) <= _SNIPPET else node.raw[: _SNIPPET - 1] + "…"
        found.append(
            Element(
                file=file,
                kind=kind,
                line=line,
                column=col,
                offset=node.offset,
                snippet=snippet,
                alt=alt,
                span=span,
                src=sources[0] if sources else None,
                sources=sources,
                attrs=dict(a),
                context=_context(node, ids),
                name_from=name_from,
            )
        )
    return found
