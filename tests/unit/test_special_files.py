"""FIFOs named like pages, images or PDFs are refused without being read, never waited on."""

from __future__ import annotations

import os
import threading

import pytest

from blipcap.alttext.engine import run_alt_text
from blipcap.documents import is_pdf

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")

HANG_GUARD_S = 60.0  # only a regression blocks this long


def finishes(fn, *args):
    """Run ``fn(*args)`` in a daemon thread; its result, failing the test if it blocks."""
    box: dict[str, object] = {}
    thread = threading.Thread(target=lambda: box.setdefault("value", fn(*args)), daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), f"{fn.__name__} blocked on a FIFO"
    return box["value"]


@pytest.fixture
def fifos(tmp_path):
    made = []

    def make(name):
        path = tmp_path / name
        os.mkfifo(path)
        made.append(path)
        return path

    yield make
    for path in made:  # free a reader that a regression left blocked in open()
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass


def test_alt_text_refuses_a_fifo_page_and_a_fifo_image(tmp_path, fifos):
    fifos("stuck.html")
    fifos("logo.png")
    (tmp_path / "good.html").write_text('<p><img src="logo.png"></p>', encoding="utf-8")
    run = finishes(run_alt_text, [tmp_path])
    pages = {page.path.name: page for page in run.pages}
    assert set(pages) == {"good.html", "stuck.html"}
    assert "not a regular file" in (pages["stuck.html"].error or "")
    assert pages["good.html"].error is None


def test_a_fifo_named_pdf_is_not_a_pdf(fifos):
    assert finishes(is_pdf, fifos("scan.pdf")) is False
