"""Byte-level edits: only alt text changes, in every encoding and line-ending style."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from blipcap.alttext.encoding import EncodingError, decode
from blipcap.alttext.scan_html import scan_html
from blipcap.alttext.scan_markdown import scan_markdown
from blipcap.alttext.write import Edit, apply_edits, atomic_write, escape_attr, unified_diff

NEW = 'Café "☕" & 日本'


def refs(text: str, codec: str) -> str:
    return text.encode(codec, "xmlcharrefreplace").decode(codec)


CASES = [
    # name, codec of the file, bom, meta tag, newline
    ("utf-8", "utf-8", b"", '<meta charset="utf-8">', "\n"),
    ("utf-8-bom-crlf", "utf-8", codecs.BOM_UTF8, "", "\r\n"),
    ("latin-1", "cp1252", b"", '<meta charset="iso-8859-1">', "\n"),
    (
        "latin-1-crlf",
        "cp1252",
        b"",
        '<META HTTP-EQUIV="Content-Type" CONTENT="text/html; charset=ISO-8859-1">',
        "\r\n",
    ),
    ("shift_jis", "shift_jis", b"", "<meta charset=Shift_JIS>", "\r\n"),
    ("utf-16-le-bom", "utf-16-le", codecs.BOM_UTF16_LE, "", "\n"),
    ("unlabelled-cp1252", "cp1252", b"", "", "\n"),
]


@pytest.mark.parametrize("name, codec, bom, meta, nl", CASES, ids=[c[0] for c in CASES])
def test_only_alt_bytes_change(name, codec, bom, meta, nl):
    words = "日本語のページ" if codec == "shift_jis" else "Crème brûlée, naïve café"
    head = f"<!DOCTYPE html>{nl}<html lang=en><head>{meta}<title>{words}</title></head>{nl}<body>{nl}  <p>{words}</p>{nl}"
    tags = [
        ("<IMG  SRC='a.png'  Width=10>", "<IMG  SRC='a.png' alt='{v}'  Width=10>", "'"),
        (
            '<img\tsrc="b.png" alt="IMG_1234" data-x=1>',
            '<img\tsrc="b.png" alt="{v}" data-x=1>',
            '"',
        ),
        ("<img alt src=c.png/>", '<img alt="{v}" src=c.png/>', '"'),
        ("<img alt=DSC0001 src=d.png>", '<img alt="{v}" src=d.png>', '"'),
    ]
    before = head + nl.join(t[0] for t in tags) + f"{nl}</body></html>{nl}"
    raw = bom + before.encode(codec)
    decoded = decode(raw)
    assert decoded.encoding == codecs.lookup(codec).name
    els = scan_html(decoded.text, Path("p.html"))
    assert len(els) == 4
    new = apply_edits(decoded, [Edit(e.span, NEW) for e in els])
    expected_tags = []
    for _, after, quote in tags:
        value = refs(escape_attr(NEW, quote), codec)
        expected_tags.append(after.replace("{v}", value))
    expected = bom + (head + nl.join(expected_tags) + f"{nl}</body></html>{nl}").encode(codec)
    assert new == expected
    # The new text reads back as written, whatever the encoding could hold natively.
    again = scan_html(decode(new).text, Path("p.html"))
    assert [e.alt for e in again] == [NEW] * 4
    assert new.count(b"\r\n" if codec != "utf-16-le" else "\r\n".encode(codec)) == raw.count(
        b"\r\n" if codec != "utf-16-le" else "\r\n".encode(codec)
    )


def test_markdown_crlf_and_bom_survive():
    md = '\ufeff# Título\r\n\r\nTexto ![IMG_1](a.png) y ![](b.png "t").\r\n'.encode()
    decoded = decode(md, html=False)
    els = scan_markdown(decoded.text, Path("d.md"))
    new = apply_edits(decoded, [Edit(els[0].span, "Un gato [negro]"), Edit(els[1].span, "Dos")])
    assert (
        new
        == '\ufeff# Título\r\n\r\nTexto ![Un gato \\[negro\\]](a.png) y ![Dos](b.png "t").\r\n'.encode()
    )


def test_markdown_reference_definitions_with_crlf():
    md = "![IMG_1][r] and ![x][t]\r\n\r\n[r]: a.png\r\n[t]: <b c.png> 'T'\r\n"
    els = scan_markdown(md, Path("d.md"))
    assert [(e.src, e.attrs["title"]) for e in els] == [("a.png", None), ("b c.png", "T")]


def test_stray_bytes_round_trip_and_untouched():
    raw = b"<p>caf\xe9 \xff\xfe</p><img src=a.png>"  # not UTF-8: read as windows-1252, kept as is
    decoded = decode(raw)
    assert decoded.encoding == "cp1252" and decoded.source == "fallback"
    els = scan_html(decoded.text, Path("p.html"))
    assert (
        apply_edits(decoded, [Edit(els[0].span, "x")])
        == b'<p>caf\xe9 \xff\xfe</p><img src=a.png alt="x">'
    )


def test_refuses_a_file_that_would_not_round_trip():
    raw = b'<meta charset="utf-8"><p>ok</p>' + b"\x81"  # meta says UTF-8, byte is not
    decoded = decode(raw)  # surrogateescape keeps it: still a byte-exact round trip
    assert decoded.text.encode("utf-8", "surrogateescape") == raw
    with pytest.raises(EncodingError, match="(?i)convert the file to UTF-8"):
        decode('<meta charset="iso-2022-jp"><p>\x1b$B'.encode("latin-1") + b"\x1b(B\x1b$B%")


def test_unified_diff_shows_only_the_alt_lines(tmp_path):
    raw = b"<p>one</p>\r\n<img src=a.png>\r\n<p>two</p>\r\n"
    decoded = decode(raw)
    els = scan_html(decoded.text, Path("p.html"))
    diff = unified_diff(
        Path("p.html"), decoded, apply_edits(decoded, [Edit(els[0].span, "A cat.")])
    )
    assert diff == (
        "--- a/p.html\n+++ b/p.html\n@@ -1,3 +1,3 @@\n <p>one</p>\r\n-<img src=a.png>\r\n"
        '+<img src=a.png alt="A cat.">\r\n <p>two</p>\r\n'
    )


def test_atomic_write_keeps_mode_symlink_and_backup(tmp_path):
    target = tmp_path / "page.html"
    target.write_bytes(b"old")
    target.chmod(0o640)
    link = tmp_path / "link.html"
    link.symlink_to(target)
    atomic_write(link, b"new", backup=True)
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert (tmp_path / "page.html.bak").read_bytes() == b"old"
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.html", "page.html", "page.html.bak"]
