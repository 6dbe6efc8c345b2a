"""Fuzzing load_image with hypothesis: mutated small images of every allowed format.

Whatever the bytes, ``load_image`` either returns an RGB image within the limits
or raises an :class:`~blipcap.errors.InputError` subclass; any other exception
escaping it is a bug. The budget is small (a few hundred examples in all, well
under 30 s on a slow machine) so it runs with the unit tests; raise
``BLIPCAP_FUZZ_EXAMPLES`` for a longer run.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from blipcap import testing
from blipcap.errors import InputError
from blipcap.images import ALLOWED_FORMATS, ImageLimits, load_image

LIMITS = ImageLimits(max_bytes=1 << 20, max_pixels=1 << 20, max_decode_bytes=32 << 20)
EXAMPLES = int(os.environ.get("BLIPCAP_FUZZ_EXAMPLES", "100"))


def _seed(fmt: str, mode: str, **save) -> bytes:
    rng = np.random.default_rng(len(fmt) + len(mode))
    pixels = rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB").convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return buf.getvalue()


# Valid small files of each allowed format (and a few modes and variants) to mutate.
SEEDS: dict[str, list[bytes]] = {
    "JPEG": [_seed("JPEG", "RGB"), _seed("JPEG", "L", progressive=True), _seed("JPEG", "CMYK")],
    "PNG": [_seed("PNG", "RGBA"), _seed("PNG", "P"), testing.apng_frame_flood(3)],
    "WEBP": [_seed("WEBP", "RGB"), _seed("WEBP", "RGBA", lossless=True)],
    "GIF": [_seed("GIF", "P"), testing.gif_frame_flood(3)],
    "BMP": [_seed("BMP", "RGB"), _seed("BMP", "1")],
    "TIFF": [_seed("TIFF", "RGB", compression="tiff_lzw"), testing.deep_tiff(8)],
}
assert set(SEEDS) == set(ALLOWED_FORMATS)


@st.composite
def mutated(draw, fmt: str) -> bytes:
    """A seed file of ``fmt`` with bytes flipped, runs overwritten, a cut or a splice."""
    data = bytearray(draw(st.sampled_from(SEEDS[fmt])))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "run", "cut", "splice", "insert"]))
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "run":
            data[pos : pos + 8] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "cut" and pos > 0:
            del data[pos:]
        elif kind == "splice":
            other = draw(st.sampled_from([s for seeds in SEEDS.values() for s in seeds]))
            data[pos:] = other[draw(st.integers(0, len(other) - 1)) :]
        elif kind == "insert":
            data[pos:pos] = draw(st.sampled_from([b"\xff\xda", b"\xff\xfe\x00\x02", b"\xff" * 9]))
        if not data:
            data = bytearray(b"\x00")
    return bytes(data)


def check(data: bytes) -> None:
    try:
        out = load_image(data, LIMITS, name="fuzz")
    except InputError as exc:
        assert str(exc).startswith("fuzz: "), exc
    else:
        assert out.mode == "RGB"
        assert 0 < out.width * out.height <= LIMITS.max_pixels


@pytest.mark.parametrize("fmt", sorted(SEEDS))
def test_mutated_images_decode_or_raise_input_error(fmt):
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(data=mutated(fmt))
    def run(data: bytes) -> None:
        check(data)

    run()


def test_unmutated_seeds_decode():
    for fmt, seeds in SEEDS.items():
        for data in seeds:
            assert load_image(data, LIMITS, name=fmt).mode == "RGB"
