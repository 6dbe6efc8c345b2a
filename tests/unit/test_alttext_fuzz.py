"""Fuzzing the HTML and Markdown scanners: no exception escapes, and a rewrite touches only alts.

Documents come from a small grammar (images, image maps and buttons, pictures, raw-text
elements, comments, CDATA, template syntax, odd quoting, CRLF) mixed with random text.
Every alt value found is replaced; removing the alt values from the original and from the
rescanned rewrite must then leave the same text.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blipcap.alttext.encoding import decode
from blipcap.alttext.scan_html import scan_html
from blipcap.alttext.scan_markdown import scan_markdown
from blipcap.alttext.write import Edit, apply_edits

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

words = st.text(alphabet="ab <>&\"'=/!-[]()*_`{}%#\\\r\n\té", max_size=12)
values = st.sampled_from(["", "x", "a b", "IMG_1.jpg", 'q"uote', "it's", "&amp;", "<b>", "é"])


@st.composite
def attribute(draw) -> str:
    name = draw(st.sampled_from(["alt", "ALT", "src", "aria-label", "title", "role", "type"]))
    value = draw(values)
    quoting = draw(st.sampled_from(['"{}"', "'{}'", "{}", "bare"]))
    if quoting == "bare":
        return name
    if quoting == "{}" and (not value or any(c in value for c in " \"'=<>`")):
        quoting = '"{}"'
    if quoting[0] in "\"'":
        value = value.replace(quoting[0], "")  # a quote inside its own quotes ends the value
    return f"{name}={quoting.format(value)}"


@st.composite
def tag(draw) -> str:
    name = draw(st.sampled_from(["img", "IMG", "area", "input", "svg", "span", "a", "source"]))
    attrs = draw(st.lists(attribute(), max_size=4))
    if name == "area":
        attrs.append('href="#"')
    if name == "input":
        attrs.append("type=image")
    space = draw(st.sampled_from([" ", "\n", "\r\n", "\t"]))
    end = draw(st.sampled_from([">", "/>", " />"]))
    return f"<{name}{space if attrs else ''}{space.join(attrs)}{end}"


@st.composite
def html_piece(draw) -> str:
    inner = draw(st.lists(st.one_of(tag(), words), max_size=3).map("".join))
    return draw(
        st.sampled_from(
            [
                inner,
                f"<picture><source srcset=a.webp>{inner}</picture>",
                f"<textarea>{inner}</textarea>",
                f"<script>{inner}</script>",
                f"<style>{inner}</style>",
                f"<xmp>{inner}</xmp>",
                f"<!-- {inner} -->",
                f"<![CDATA[{inner}]]>",
                f"{{% include {inner} %}}",
                f"{{{{ {inner} }}}}",
                f"<a href=/x>{inner}</a>",
                f"<figure>{inner}<figcaption>{{% x %}}cap</figcaption></figure>",
                "\r\n",
            ]
        )
    )


html_documents = st.lists(st.one_of(html_piece(), words), max_size=8).map("".join)


@st.composite
def markdown_piece(draw) -> str:
    alt = draw(st.text(alphabet="ab *_`\\[]é", max_size=6))
    src = draw(st.sampled_from(["a.png", "<my photo.png>", "a(b).png", "x.png 'T'", 'y.png "T"']))
    image = f"![{alt}]({src})"
    return draw(
        st.sampled_from(
            [
                image,
                f"[{image}](https://example.org/)",
                f"`{image}`",
                f"```\n{image}\n```\n",
                f"    {image}\n",
                "\r\n",
                "\n\n",
                f"{{% raw %}}{image}{{% endraw %}}",
            ]
        )
        | html_piece()
    )


markdown_documents = st.lists(st.one_of(markdown_piece(), words), max_size=8).map("".join)


def without_alts(text: str, elements, *, quote_bare: bool = False) -> str:
    """``text`` with every alt value the scan found cut out.

    ``quote_bare``: an unquoted HTML value leaves ``""`` behind, as the writer always quotes.
    """
    spans = sorted((e.span for e in elements if _editable(e)), key=lambda s: s.start)
    out, pos = [], 0
    for span in spans:
        out.append(text[pos : span.start])
        if quote_bare and not span.quote and span.attr != "markdown":
            out.append('""')
        pos = span.end
    return "".join(out) + text[pos:]


def _editable(element) -> bool:
    return element.span is not None and element.span.mode == "value"


def rewrite_every_alt(text: str, scan, html: bool) -> None:
    elements = scan(text, Path("doc"))
    decoded = decode(text.encode("utf-8"), html=html)
    edits = [Edit(e.span, f"new {i} \"'<&>*[]") for i, e in enumerate(elements) if _editable(e)]
    new = apply_edits(decoded, edits).decode("utf-8")
    again = scan(new, Path("doc"))
    assert without_alts(new, again) == without_alts(text, elements, quote_bare=True)


@FUZZ
@given(html_documents)
def test_html_scanner_rewrites_only_alt_values(text):
    rewrite_every_alt(text, scan_html, html=True)


@FUZZ
@given(markdown_documents)
def test_markdown_scanner_rewrites_only_alt_values(text):
    rewrite_every_alt(text, scan_markdown, html=False)


@FUZZ
@given(st.text(max_size=200))
def test_scanners_never_raise_on_any_text(text):
    scan_html(text, Path("doc.html"))
    scan_markdown(text, Path("doc.md"))
