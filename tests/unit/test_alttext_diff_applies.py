"""The proposed alt-text diff applies with ``git apply``, whatever the file's line endings."""

from __future__ import annotations

import codecs
import shutil
import subprocess
from pathlib import Path

import pytest

from blipcap.alttext.encoding import decode
from blipcap.alttext.scan_html import scan_html
from blipcap.alttext.write import Edit, apply_edits, unified_diff

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


@pytest.mark.parametrize(
    "raw",
    [
        b"<p>one</p>\n<img src=a.png>\n<p>two</p>\n",
        b"<p>one</p>\r\n<img src=a.png>\r\n<p>two</p>\r\n",
        codecs.BOM_UTF8 + b"<img src=a.png>\r\n<p>two</p>\r\n",
        b"<p>one</p>\r\n<p>two</p>\n<img src=a.png>",  # mixed endings, no newline at the end
    ],
    ids=["lf", "crlf", "bom-crlf", "mixed-no-final-newline"],
)
def test_git_apply_gives_the_edited_file(tmp_path, raw):
    def git(*args: str, **kw):
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, timeout=60, **kw)

    git("init", "-q")
    git("config", "core.autocrlf", "false")
    (tmp_path / "p.html").write_bytes(raw)
    decoded = decode(raw)
    img = scan_html(decoded.text, Path("p.html"))[0]
    edited = apply_edits(decoded, [Edit(img.span, "A cat.")])
    patch = unified_diff(Path("p.html"), decoded, edited).encode("utf-8")

    check = git("apply", "--check", "-", input=patch)
    assert check.returncode == 0, check.stderr.decode()
    assert git("apply", "-", input=patch).returncode == 0
    assert (tmp_path / "p.html").read_bytes() == edited
