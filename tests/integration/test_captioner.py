"""Captioner on a tiny real checkpoint: order, item errors, provenance, options."""

from __future__ import annotations

import pytest
from PIL import Image

from blipcap import Captioner
from blipcap.captioner import get_captioner
from tests.helpers import image_bytes


@pytest.fixture(scope="module")
def cap(tiny_checkpoint):
    return Captioner(str(tiny_checkpoint), backend="torch", device="cpu")


def jpeg(seed: int) -> bytes:
    return image_bytes(seed, "JPEG", (70, 50))


def test_results_in_input_order_with_item_errors(cap, tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg(1))
    fake = tmp_path / "page.jpg"
    fake.write_text("<html><body>not an image</body></html>")
    inputs = [
        str(good),
        jpeg(2),
        str(fake),
        str(tmp_path / "missing.png"),
        Image.new("RGB", (9, 9)),
    ]
    results = cap.caption(inputs, batch_size=2)
    assert [r.ok for r in results] == [True, True, False, False, True]
    assert results[0].path == str(good)
    assert results[2].error.type == "UnsupportedFormatError"
    assert "HTML" in results[2].error.message
    assert results[3].error.type == "InputError"
    assert all(isinstance(r.caption, str) and r.caption for r in results if r.ok)


def test_batch_size_does_not_change_results(cap):
    images = [jpeg(i) for i in range(5)]
    one = [r.caption for r in cap.caption(images, batch_size=1)]
    assert [r.caption for r in cap.caption(images, batch_size=3)] == one
    assert [r.caption for r in cap.caption_iter(iter(images), batch_size=2)] == one


def test_provenance_marks_random_weights(cap):
    r = cap.caption([jpeg(0)], preset="coco")[0]
    rec = r.to_record()
    assert rec["backend"] == "torch" and rec["dtype"] == "float32" and rec["device"] == "cpu"
    assert rec["revision"].startswith("local-")
    assert rec["options"]["num_beams"] == 3 and rec["options"]["prompt"] == "a picture of "
    assert rec["machine_generated"] is True and rec["random_weights"] is True


def test_several_captions(cap):
    r = cap.caption([jpeg(0)], num_beams=3, num_captions=3, max_new_tokens=6)[0]
    assert len(r.captions) == 3 and r.caption == r.captions[0]
    assert len(set(r.captions)) == 3
    assert "captions" in r.to_record()
    s = cap.caption([jpeg(0)], do_sample=True, num_captions=2, seed=1, max_new_tokens=6)[0]
    assert len(s.captions) == 2


def test_prompt_is_stripped_unless_asked(cap):
    stripped = cap.caption([jpeg(0)], prompt="a photo of", max_new_tokens=4)[0].caption
    kept = cap.caption([jpeg(0)], prompt="a photo of", max_new_tokens=4, strip_prompt=False)[
        0
    ].caption
    assert kept == f"a photo of {stripped}"


def test_shared_captioner_is_one_instance(tiny_checkpoint):
    a = get_captioner(str(tiny_checkpoint), "torch", "cpu", "float32")
    assert get_captioner(str(tiny_checkpoint), "torch", "cpu", "float32") is a


def test_fifo_among_files_is_an_item_error_not_a_hang(cap, tmp_path):
    """A named pipe called *.jpg is never opened for reading: it fails, the others are captioned."""
    import os
    import threading

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    good, fifo, good2 = tmp_path / "good.jpg", tmp_path / "fifo.jpg", tmp_path / "good2.jpg"
    good.write_bytes(jpeg(1))
    good2.write_bytes(jpeg(2))
    os.mkfifo(fifo)
    box = {}
    thread = threading.Thread(
        target=lambda: box.update(results=cap.caption([str(good), str(fifo), str(good2)])),
        daemon=True,
    )
    thread.start()
    thread.join(120)  # a hang-guard only
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # free the blocked reader
        pytest.fail("captioning blocked on a FIFO")
    results = box["results"]
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error.type == "InputError"
    assert "is a named pipe (FIFO), not a regular file" in results[1].error.message
