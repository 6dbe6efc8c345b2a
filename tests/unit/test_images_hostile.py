"""Hostile inputs: bounded decode work, decode memory, cancellation, no global lock, special files.

The files come from :func:`blipcap.testing.hostile_images` and its builders, in
small versions that cross the same limits as the full-size attacks. Deadlines
here are hang-guards only; no test asserts how fast anything is.
"""

from __future__ import annotations

import io
import os
import re
import threading

import numpy as np
import pytest
from PIL import Image, ImageFile

from blipcap import image_guard, images, testing
from blipcap.errors import (
    CorruptImageError,
    DecodeCancelledError,
    ImageTooLargeError,
    InputError,
)
from blipcap.images import CancelToken, ImageLimits, load_image

HANG_GUARD_S = 60.0


def encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def noisy(size=(96, 64), mode="RGB", seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def in_thread(fn, *args, **kwargs):
    """Run ``fn`` in a daemon thread; return (finished, result or exception)."""
    box: dict[str, object] = {}

    def target():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["value"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


@pytest.fixture
def no_pixel_decode(monkeypatch):
    def forbidden(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)


# --------------------------------------------------------------------------- A: decode time


def true_scan_count(data: bytes) -> int:
    """Count SOS markers the slow, exact way: walk segments and step through entropy data."""
    pos, scans = 2, 0
    while pos < len(data) - 1:
        if data[pos] != 0xFF or data[pos + 1] in (0x00, 0xFF):
            pos += 1
            continue
        marker = data[pos + 1]
        if marker == 0xD9:
            return scans
        if marker in range(0xD0, 0xD8) or marker == 0x01:
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            scans += 1
            # Entropy-coded data: FF 00 is a stuffed byte, FF D0-D7 a restart marker.
            while pos < len(data) - 1 and not (
                data[pos] == 0xFF and data[pos + 1] not in (0x00, *range(0xD0, 0xD8))
            ):
                pos += 1
    return scans


@pytest.mark.parametrize(
    ("mode", "save"),
    [
        ("RGB", {}),
        ("RGB", {"progressive": True}),
        ("L", {"progressive": True, "quality": 100}),
        ("RGB", {"progressive": True, "subsampling": 0, "quality": 97}),
        ("RGB", {"restart_marker_blocks": 1}),
    ],
)
def test_counting_ff_da_finds_exactly_the_scans(mode, save):
    """Byte stuffing leaves no FF DA inside entropy-coded data, so a C-speed count is exact."""
    for seed in range(3):
        data = encode(noisy((67, 45), mode, seed), "JPEG", **save)
        scans = image_guard.jpeg_scans(data, "x.jpg")
        assert scans == true_scan_count(data) >= 1
    assert image_guard.jpeg_scans(testing.scan_bomb_jpeg(16, 50), "x.jpg") == true_scan_count(
        testing.scan_bomb_jpeg(16, 50)
    )


def test_scan_bomb_is_refused_before_decoding(no_pixel_decode):
    data = testing.scan_bomb_jpeg(size=64, repeats=2000)
    with pytest.raises(ImageTooLargeError) as info:
        load_image(data, name="bomb.jpg")
    message = str(info.value)
    assert re.match(r"bomb\.jpg: a JPEG of 64x64 pixels in \d+ scans is too much decoding", message)
    assert "baseline JPEG" in message and "max_jpeg_scans" in message


def test_scans_times_pixels_is_bounded_too(no_pixel_decode):
    data = testing.scan_bomb_jpeg(size=256, repeats=40)  # under 100 scans, but 256x256 each
    limits = ImageLimits(max_jpeg_scan_pixels=40 * 256 * 256)
    with pytest.raises(ImageTooLargeError, match="MP x scans"):
        load_image(data, limits)


def test_normal_progressive_jpegs_still_decode():
    for mode in ("RGB", "L"):
        data = encode(noisy((300, 200), mode), "JPEG", progressive=True, quality=95)
        assert load_image(data).size == (300, 200)


def test_cancelled_or_expired_token_stops_before_reading(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(encode(noisy(), "PNG"))
    token = CancelToken()
    token.cancel()
    with pytest.raises(DecodeCancelledError, match=r"a\.png: decoding was cancelled"):
        load_image(path, cancel=token)
    with pytest.raises(DecodeCancelledError, match="stopped at its deadline"):
        load_image(path, cancel=CancelToken.after(-1))
    assert load_image(path, cancel=CancelToken.after(HANG_GUARD_S)).size == (96, 64)


def test_cancel_during_the_pixel_decode_stops_it_and_frees_its_memory(monkeypatch):
    """The decoder pulls its input through the token: a cancel stops it at the next block."""
    token = CancelToken()
    real_load = ImageFile.ImageFile.load
    reads_after_cancel = []

    def cancel_then_load(self):
        token.cancel()  # the request's time runs out just as the decode starts
        reads_after_cancel.append(self.fp.tell())
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", cancel_then_load)
    data = encode(noisy((512, 512)), "PNG")
    with pytest.raises(DecodeCancelledError, match="cancelled"):
        load_image(data, cancel=token)
    assert reads_after_cancel and reads_after_cancel[0] < len(data)  # stopped mid-file
    assert images.decode_memory_budget()[1] == 0


# --------------------------------------------------------------------------- B: decode memory


def test_deep_tiff_is_budgeted_by_bytes_per_pixel(no_pixel_decode):
    data = testing.deep_tiff(size=512)
    assert len(data) < 10_000  # tiny file, 1 MB of 32-bit pixels
    # 512x512 8-bit grey fits a limit that the same size in 32 bits does not.
    limits = ImageLimits(max_decode_bytes=512 * 512 * 12)
    with pytest.raises(ImageTooLargeError) as info:
        load_image(data, limits, name="deep.tif")
    assert str(info.value).startswith("deep.tif: decoding its 512x512 I pixels needs about 4 MiB")
    assert "max_decode_bytes" in str(info.value)


def test_deep_images_convert_without_a_full_size_float_copy():
    import tracemalloc

    side = 2048
    deep = Image.fromarray(
        np.random.default_rng(0).integers(-70_000, 70_000, (side, side), dtype=np.int32), "I"
    )
    tracemalloc.start()
    try:
        rgb = images.to_rgb(deep)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rgb.size == (side, side)
    # A float64 copy of the whole image alone would be 8 bytes a pixel; the result is 1.
    assert peak < 3 * side * side, f"peak {peak / 2**20:.1f} MiB"


def test_deep_tiff_values_are_kept():
    out = load_image(testing.deep_tiff(size=16, value=70_000))
    assert out.getpixel((3, 3)) == (0, 0, 0)  # one value: no range, as before
    ramp = Image.fromarray(np.arange(-3, 3, dtype=np.int32).reshape(1, 6) * 10_000, "I")
    assert [load_image(ramp).getpixel((x, 0))[0] for x in range(6)] == [0, 51, 102, 153, 204, 255]


def test_an_image_larger_than_the_whole_budget_fails_at_once(no_pixel_decode):
    previous = images.set_decode_memory_budget(1000)
    try:
        with pytest.raises(ImageTooLargeError, match="more than the whole decode-memory budget"):
            load_image(encode(noisy(), "PNG"))
    finally:
        images.set_decode_memory_budget(previous)


def test_decodes_wait_for_the_budget_with_a_deadline():
    data = encode(noisy(), "PNG")
    needed = images._decode_bytes(96 * 64, "RGB")
    previous = images.set_decode_memory_budget(needed + needed // 2)
    try:
        with images._DECODE_MEMORY.reserve(needed, "another image", CancelToken()):
            with pytest.raises(DecodeCancelledError, match="waited .* for decode memory"):
                load_image(data, name="late.png", cancel=CancelToken.after(0.2))
            thread, box = in_thread(load_image, data, cancel=CancelToken.after(HANG_GUARD_S))
            thread.join(0.3)
            assert thread.is_alive()  # waiting for the other image's share
        thread.join(HANG_GUARD_S)
        assert isinstance(box["value"], Image.Image)  # ... and decoded once it was freed
        assert images.decode_memory_budget() == (needed + needed // 2, 0)
    finally:
        images.set_decode_memory_budget(previous)


def test_budget_and_limits_are_validated():
    with pytest.raises(ValueError, match="must be positive"):
        images.set_decode_memory_budget(0)
    with pytest.raises(ValueError, match="max_jpeg_scans must be positive"):
        ImageLimits(max_jpeg_scans=0)


# --------------------------------------------------------------------------- D: no global lock


def test_marker_flood_is_refused_before_pillow_walks_it(monkeypatch):
    from PIL import JpegImagePlugin

    def forbidden(self):
        raise AssertionError("Pillow parsed the markers")

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "_open", forbidden)
    with pytest.raises(CorruptImageError, match=r"flood\.jpg: over 1000 markers"):
        load_image(testing.comment_flood_jpeg(5000), name="flood.jpg")


def test_junk_bytes_between_jpeg_markers_are_bounded():
    data = encode(noisy((8, 8)), "JPEG")
    assert load_image(data[:2] + b"\xff" * 100 + data[2:]).size == (8, 8)  # fill bytes are legal
    with pytest.raises(CorruptImageError, match="junk"):
        load_image(data[:2] + b"\xff" * 100_000 + data[2:])


def test_png_chunk_flood_is_refused_and_apng_decodes_frame_zero():
    with pytest.raises(CorruptImageError, match="over 50000 PNG chunks"):
        load_image(testing.png_chunk_flood(60_000))
    assert load_image(testing.png_chunk_flood(100)).getpixel((0, 0)) == (255, 0, 0)
    assert load_image(testing.apng_frame_flood(500)).getpixel((0, 0)) == (255, 0, 0)


def test_tiff_strip_flood_is_refused_and_normal_strips_decode(monkeypatch):
    monkeypatch.setattr(image_guard, "MAX_TIFF_STRIPS", 1000)
    with pytest.raises(CorruptImageError, match=r"s\.tif: a TIFF page in 1001 strips or tiles"):
        load_image(testing.strip_flood_tiff(1001), name="s.tif")
    out = load_image(testing.strip_flood_tiff(1000))
    assert out.size == (1, 1000) and out.getpixel((0, 999)) == (128, 128, 128)
    assert image_guard.tiff_strips(testing.strip_flood_tiff(1000)) == 1000
    assert image_guard.tiff_strips(encode(noisy(), "TIFF")) == 1


def test_a_slow_header_does_not_stall_other_images(monkeypatch):
    """Opening images takes no process-wide lock: one stuck header parse blocks nobody else."""
    Image.init()
    gif_factory, gif_accept = Image.OPEN["GIF"]
    entered, release = threading.Event(), threading.Event()

    def slow_gif(fp, filename):
        entered.set()
        release.wait(HANG_GUARD_S)
        return gif_factory(fp, filename)

    monkeypatch.setitem(Image.OPEN, "GIF", (slow_gif, gif_accept))
    stuck, _ = in_thread(load_image, encode(noisy((8, 8)), "GIF"))
    try:
        assert entered.wait(HANG_GUARD_S)
        other, box = in_thread(load_image, encode(noisy((8, 8)), "PNG"))
        other.join(10.0)
        assert not other.is_alive(), "a PNG waited for another thread's GIF header"
        assert isinstance(box["value"], Image.Image)
    finally:
        release.set()
        stuck.join(HANG_GUARD_S)


def test_bomb_check_emits_no_warning(recwarn):
    from tests.unit.test_images import png_header_only

    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        load_image(png_header_only(10_000, 10_000), ImageLimits(max_pixels=150_000_000))
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


# --------------------------------------------------------------------------- G: special files


@pytest.fixture
def fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    path = tmp_path / "fifo.jpg"
    os.mkfifo(path)
    yield path
    try:  # free a reader that a regression left blocked in open()
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def test_fifo_is_an_item_error_not_a_hang(fifo):
    thread, box = in_thread(load_image, fifo)
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), "load_image blocked on a FIFO"
    assert isinstance(box["value"], InputError)
    assert str(box["value"]) == (
        f"{fifo}: is a named pipe (FIFO), not a regular file; images are read only from "
        "regular files. Save the image to a file and pass that path."
    )


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_devices_are_refused_without_reading():
    with pytest.raises(InputError, match="is a character device"):
        load_image("/dev/zero")


def test_fifo_swapped_in_after_the_check_is_still_refused(fifo, tmp_path, monkeypatch):
    regular = tmp_path / "a.jpg"
    regular.write_bytes(b"x")
    real_stat = os.stat
    monkeypatch.setattr(images.os, "stat", lambda p, *a, **k: real_stat(regular))
    with pytest.raises(InputError, match="named pipe"):
        images.open_regular_file(fifo)


def test_index_reports_a_fifo_and_indexes_the_rest(fifo, tmp_path):
    from blipcap.index import Indexer, open_store
    from tests.fakes import FakeCaptioner
    from tests.fakes import LengthEmbedder as WordEmbedder
    from tests.helpers import image_file as make

    make(tmp_path / "good.jpg", (200, 0, 0))
    make(tmp_path / "good2.png", (0, 200, 0))
    errors = []

    def index():
        with open_store(tmp_path / "i.db") as store:
            indexer = Indexer(
                store, FakeCaptioner(), WordEmbedder(), on_error=lambda p, m: errors.append(m)
            )
            return indexer.run([str(tmp_path)])

    thread, box = in_thread(index)
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), "the indexer blocked on a FIFO"
    summary = box["value"]
    assert (summary.added, summary.failed) == (2, 1)
    assert errors and "named pipe (FIFO)" in errors[0]


# --------------------------------------------------------------------------- O: size messages


def test_sizes_that_round_alike_are_shown_exactly():
    limit = 50 * 2**20
    with pytest.raises(ImageTooLargeError) as info:
        load_image(b"\0" * (limit + 1), ImageLimits(max_bytes=limit), name="big.bin")
    assert str(info.value).startswith(
        "big.bin: 52,428,801 bytes is larger than the 52,428,800 bytes limit."
    )
    with pytest.raises(ImageTooLargeError, match="60 MiB is larger than the 50 MiB limit"):
        load_image(b"\0" * (60 * 2**20), ImageLimits(max_bytes=limit))


# --------------------------------------------------------------------------- the corpus


def test_every_hostile_image_is_refused_or_decoded_small():
    corpus = testing.hostile_images()
    assert len({name for name, _, _ in corpus}) == len(corpus) >= 6
    for name, data, what in corpus:
        assert what
        try:
            out = load_image(data, name=name)
        except InputError as exc:
            assert str(exc).startswith(f"{name}: ")
        else:
            assert out.mode == "RGB" and out.width * out.height <= 64 * 64, name
