"""Scanning HTML and Markdown: every text alternative, with exact positions and spans."""

from __future__ import annotations

from pathlib import Path

from blipcap.alttext.encoding import decode
from blipcap.alttext.scan_html import scan_html, tokenize_attrs
from blipcap.alttext.scan_markdown import alt_plain_text, escape_alt, scan_markdown
from blipcap.alttext.write import Edit, apply_edits

HTML = """<p>Hi <a href="/shop/"><img src="t.png"></a> there</p>
<picture><source srcset="a.webp 1x, b.webp 2x"><img src='c.jpg' ALT="IMG_1" width=1></picture>
<input type=image src=go.png><map name=m><area href=/x alt=""><area nohref></map>
<div role=img aria-label="Chart"></div><svg role="img"><title>Logo</title></svg>
<img alt src=q.png><img data-src="real.jpg" src="data:image/gif;base64,R0lGOD=" srcset="s.jpg 320w, l.jpg 1024w">
<img src="x.png" alt="first" alt="second">
"""


def test_html_elements_positions_and_sources():
    els = scan_html(HTML, Path("p.html"))
    got = [(e.kind, e.line, e.column, e.alt, e.name_from, e.sources) for e in els]
    assert got == [
        ("img", 1, 24, None, "alt", ["t.png"]),
        ("img", 2, 48, "IMG_1", "alt", ["c.jpg", "b.webp", "a.webp"]),
        ("input-image", 3, 1, None, "alt", ["go.png"]),
        ("area", 3, 42, "", "alt", []),
        ("role-img", 4, 1, "Chart", "aria-label", []),
        ("svg-img", 4, 40, "Logo", "title", []),
        ("img", 5, 1, "", "alt", ["q.png"]),
        (
            "img",
            5,
            20,
            None,
            "alt",
            ["l.jpg", "s.jpg", "real.jpg", "data:image/gif;base64,R0lGOD="],
        ),
        ("img", 6, 1, "first", "alt", ["x.png"]),  # the first of duplicate attributes wins
    ]
    link = els[0].context
    assert (link.control, link.link_href, link.control_text, link.text_before, link.text_after) == (
        "a", "/shop/", "", "Hi", "there",
    )  # fmt: skip
    assert els[3].context.control == "area" and els[3].context.link_href == "/x"
    assert els[2].context.control == "input"


def test_spans_point_at_the_alt_value_or_the_insertion_point():
    els = scan_html(HTML, Path("p.html"))
    spans = {(e.line, e.column): e.span for e in els}
    s = spans[(2, 48)]
    assert (s.mode, HTML[s.start : s.end], s.quote) == ("value", "IMG_1", '"')
    s = spans[(1, 24)]
    assert (s.mode, HTML[s.start - 7 : s.start]) == ("insert", '"t.png"')
    s = spans[(5, 1)]
    assert (s.mode, HTML[s.start - 8 : s.start]) == ("bare", "<img alt")
    s = spans[(3, 1)]  # unquoted attributes: the new one goes after src, double-quoted
    assert (s.mode, HTML[s.start - 10 : s.start], s.quote) == ("insert", "src=go.png", '"')
    s = spans[(4, 1)]
    assert (s.mode, s.attr, HTML[s.start : s.end]) == ("value", "aria-label", "Chart")


def test_tokenizer_follows_the_html_attribute_states():
    raw = "<img\tsrc = 'a b.png'  data-x=1/ =odd alt=\"x\">"
    names = [
        (t.name, raw[t.value_start : t.value_end] if t.value_start is not None else None)
        for t in tokenize_attrs(raw)
    ]
    assert names == [("src", "a b.png"), ("data-x", "1/"), ("=odd", None), ("alt", "x")]


MD = r"""---
title: "![not](frontmatter.png)"
---
# Garden

Intro ![a [nested] alt](img/a.png "A title") after.

[![](logo.png)](https://example.com/ "Home")

![IMG_1234][ref] and ![shortcut] and ![coll][]

`![not](code.png)` and ``![not](code2.png)``

```
![not](fenced.png)
```

    ![not](indented.png)

<!-- ![not](comment.png) -->
<p>Raw <img src="raw.png"></p>

![Photo](<my photo.png>) ![x](a(b).png) ![esc \] bracket](e.png)

[ref]: images/r.png 'Ref title'
[shortcut]: s.png
[coll]: <c.png>
"""


def test_markdown_images_of_every_form():
    els = scan_markdown(MD, Path("doc.md"))
    got = [
        (e.kind, e.line, e.column, e.alt, e.src, e.attrs.get("form"), e.attrs.get("title"))
        for e in els
    ]
    assert got == [
        ("md-image", 6, 7, "a [nested] alt", "img/a.png", "inline", "A title"),
        ("md-image", 8, 2, "", "logo.png", "inline", None),
        ("md-image", 10, 1, "IMG_1234", "images/r.png", "full", "Ref title"),
        ("md-image", 10, 22, "shortcut", "s.png", "shortcut", None),
        ("md-image", 10, 38, "coll", "c.png", "collapsed", None),
        ("img", 21, 8, None, "raw.png", None, None),
        ("md-image", 23, 1, "Photo", "my photo.png", "inline", None),
        ("md-image", 23, 26, "x", "a(b).png", "inline", None),
        ("md-image", 23, 41, "esc ] bracket", "e.png", "inline", None),
    ]
    logo = els[1].context
    assert (logo.control, logo.link_href, logo.link_title, logo.control_text) == (
        "a", "https://example.com/", "Home", "",
    )  # fmt: skip


def test_markdown_round_trip_changes_only_the_description():
    decoded = decode(MD.encode("utf-8"), html=False)
    els = scan_markdown(decoded.text, Path("doc.md"))
    texts = [
        "A [new] *alt*",
        "Logo of Example",
        "Team photo",
        "Short",
        "Collapsed",
        None,
        "A photo",
        "Y",
        "Z",
    ]
    edits = [
        Edit(e.span, t)
        for e, t in zip(els, texts, strict=True)
        if t is not None and e.kind == "md-image"
    ]
    new = apply_edits(decoded, edits).decode("utf-8")
    assert '![A \\[new\\] \\*alt\\*](img/a.png "A title")' in new
    assert '[![Logo of Example](logo.png)](https://example.com/ "Home")' in new
    assert "![Team photo][ref] and ![Short] and ![Collapsed][]" in new
    assert "![A photo](<my photo.png>) ![Y](a(b).png) ![Z](e.png)" in new
    # Re-scanning reads back exactly the new text (escapes undone).
    again = scan_markdown(new, Path("doc.md"))
    assert [e.alt for e in again if e.kind == "md-image"][:2] == [
        "A [new] *alt*",
        "Logo of Example",
    ]
    # The shortcut reference now points nowhere: that image's label changed, as Markdown defines.
    old_lines, new_lines = MD.splitlines(), new.splitlines()
    assert [i for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=True)) if a != b] == [
        5,
        7,
        9,
        22,
    ]


def test_alt_plain_text_and_escaping():
    assert alt_plain_text(r"a *big* \[dog\] [link](x) ![i](y)") == "a big [dog] link i"
    assert (
        escape_alt("a [b] *c* _d_ `e` <f> &amp; \\") == r"a \[b\] \*c\* \_d\_ \`e\` \<f> \&amp; \\"
    )


def test_raw_text_elements_hold_no_images():
    """A code sample in a <textarea> or <xmp> is text, as browsers parse it (HTML standard)."""
    html = (
        '<textarea><img src="in-textarea.png"></textarea>\n'
        '<xmp><img src="in-xmp.png"></xmp><title><img src="t.png"></title>\n'
        '<iframe><img src="f.png"></iframe><noembed><img src="e.png"></noembed>\n'
        '<noframes><img src="n.png"></noframes><noscript><img src="s.png"></noscript>\n'
        '<style>img{}</style><img src="real.png">\n'
        '<plaintext><img src="after-plaintext.png"></plaintext><img src="x.png">'
    )
    assert [e.src for e in scan_html(html, Path("a.html"))] == ["real.png"]


def test_odd_marked_sections_are_bogus_comments():
    """``<![`` starts a bogus comment up to ``>`` (found by tests/unit/test_alttext_fuzz.py)."""
    html = '<![<img src="hidden.png">x<![CDATA[ <img src="c.png"> ]]><img src="real.png">'
    assert [e.src for e in scan_html(html, Path("a.html"))] == ["real.png"]
    assert [e.src for e in scan_markdown(html, Path("a.md"))] == ["real.png"]
