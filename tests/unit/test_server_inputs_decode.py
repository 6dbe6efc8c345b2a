"""The server's decode step: separate time budgets and messages for uploads and URLs, and
decodes that stop when their request gives up on them."""

from __future__ import annotations

import asyncio
import io
import threading
import time

from PIL import Image

from blipcap import images, memory
from blipcap.errors import DecodeBusyError, DecodeCancelledError, FetchError
from blipcap.images import CancelToken, decode_memory_budget
from blipcap.server import inputs
from blipcap.server.config import ServerConfig
from blipcap.server.inputs import RawInput, load_inputs

HANG_GUARD_S = 60.0


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


def load(raws, deadline, config=None):
    return asyncio.run(load_inputs(raws, config or ServerConfig(), deadline))


def test_uploads_and_urls_are_decoded_within_the_request():
    loaded = load([RawInput("a.png", data=png())], time.monotonic() + HANG_GUARD_S)
    assert loaded[0].error is None and loaded[0].image.size == (8, 8)


def test_an_upload_out_of_time_is_not_told_to_use_a_faster_host():
    past = time.monotonic() - 1
    upload, url = load([RawInput("a.png", data=png()), RawInput("b", url="https://x/b.png")], past)
    assert isinstance(upload.error, DecodeCancelledError)
    assert str(upload.error).startswith("a.png: not decoded within 0 s, the time left to this")
    assert "faster host" not in str(upload.error)
    assert isinstance(url.error, FetchError) and "use a faster host" in str(url.error)


def test_a_decode_the_request_gave_up_on_stops(monkeypatch):
    """The decode thread sees its request's deadline through the CancelToken and ends."""
    stopped = threading.Event()

    def slow_load_image(data, limits, *, name, cancel):
        try:
            while True:  # a decode phase boundary, over and over
                cancel.check(name)
                time.sleep(0.01)
        finally:
            stopped.set()

    monkeypatch.setattr(inputs, "load_image", slow_load_image)
    loaded = load([RawInput("slow.png", data=b"x")], time.monotonic() + 0.3)
    assert isinstance(loaded[0].error, DecodeCancelledError)
    assert "faster host" not in str(loaded[0].error)
    assert stopped.wait(HANG_GUARD_S), "the decode kept running after its request gave up"


def test_busy_decode_memory_is_503_and_a_passed_deadline_504():
    """Busy is worth retrying (503, Retry-After); out of time is the request's deadline (504)."""
    assert inputs.status_for(DecodeBusyError("x: waited for decode memory")) == 503
    assert inputs.status_for(DecodeCancelledError("x: stopped at its deadline")) == 504


def test_a_decode_token_is_cancelled_when_the_request_stops_waiting():
    with inputs.decode_token(time.monotonic() + HANG_GUARD_S) as cancel:
        assert not cancel.cancelled
    assert cancel.cancelled


def test_decode_one_keeps_a_cancelled_decode_as_the_items_error():
    with inputs.decode_token(time.monotonic() + HANG_GUARD_S) as cancel:
        assert inputs.decode_one(png(), ServerConfig().image_limits, cancel).image.size == (8, 8)
    gone = inputs.decode_one(png(), ServerConfig().image_limits, cancel)
    assert gone.image is None and isinstance(gone.error, DecodeCancelledError)


def test_a_decode_that_cannot_get_decode_memory_in_time_is_busy():
    total, _ = decode_memory_budget()
    hold = CancelToken()
    with images._DECODE_MEMORY.reserve(total, "other images", hold):
        loaded = load([RawInput("a.png", data=png())], time.monotonic() + 0.3)
    assert isinstance(loaded[0].error, DecodeBusyError)
    assert inputs.status_for(loaded[0].error) == 503


def test_captioning_shrinks_each_image_to_the_model_size_in_its_worker():
    """A decoded photo waits for the model at 384x384, and its model pixels do not change."""
    import numpy as np

    from blipcap.model.processing import ImagePreprocessor

    prep = ImagePreprocessor()
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (900, 1300, 3), dtype=np.uint8))
    buf = io.BytesIO()
    photo.save(buf, "PNG")
    raw = RawInput(name="big.png", data=buf.getvalue())
    deadline = time.monotonic() + 60
    (loaded,) = asyncio.run(load_inputs([raw], ServerConfig(), deadline, prep.to_model_size))
    assert loaded.image.size == (384, 384)
    np.testing.assert_array_equal(prep(loaded.image), prep(photo))


def test_the_service_hands_large_frees_back_on_glibc():
    import sys

    if not sys.platform.startswith("linux"):
        return
    assert memory.return_large_frees_to_the_os() is True


def test_serve_defaults_to_the_images_modules_decode_budget():
    """`blipcap serve` writes the default out (its --help imports no Pillow); it must not drift."""
    from blipcap.cli.serve import serve

    option = next(p for p in serve.params if p.name == "decode_memory_mb")
    assert option.default * 2**20 == images.DEFAULT_DECODE_MEMORY
    assert ServerConfig().decode_memory_bytes == images.DEFAULT_DECODE_MEMORY
