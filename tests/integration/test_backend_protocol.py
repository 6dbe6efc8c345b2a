"""The Backend protocol on the torch backend: encode + start_encoded is start, capabilities are
asked, not probed, and uint8 pixels at model size caption as their images do."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from blipcap import Captioner  # noqa: E402
from blipcap.backends.base import Backend, Capabilities, Preencoded  # noqa: E402
from blipcap.options import CaptionOptions  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return Captioner(str(tiny_checkpoint), backend="torch", device="cpu")


def photos(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 255, (40 + 9 * i, 50, 3), np.uint8)) for i in range(n)]


def test_the_torch_backend_is_a_backend_with_its_capabilities(tiny):
    assert isinstance(tiny.backend, Backend)
    assert tiny.backend.capabilities == Capabilities(device_normalize=True)  # CPU: no overlap


def test_start_encoded_gives_the_logits_of_start(tiny):
    pixels = np.stack([tiny.preprocess(im) for im in photos(2)])
    ids = torch.full((2, 1), 30522)
    want = tiny.backend.start(pixels, 1, 8).step(ids)
    got = tiny.backend.start_encoded(tiny.backend.encode(pixels), 1, 8).step(ids)
    assert torch.equal(got, want)


def test_preencoded_tokens_equal_the_default_paths(tiny):
    pixels = np.stack([tiny.preprocess(im) for im in photos(3)])
    opts = CaptionOptions(max_new_tokens=6, num_beams=2)
    encoded = Preencoded(tiny.backend, tiny.backend.encode(pixels), 3)
    assert tiny.generate_tokens(encoded.pixels, opts, backend=encoded) == tiny.generate_tokens(
        pixels, opts
    )


def test_uint8_pixels_at_model_size_caption_as_their_images(tiny):
    images = photos(3)
    u8 = np.stack([tiny.preprocess.to_uint8(im) for im in images])
    want = tiny.caption(images, max_new_tokens=7)
    got = tiny.caption_pixels(u8, CaptionOptions(max_new_tokens=7))
    assert [r.captions for r in got] == [r.captions for r in want]
    assert [r.confidences for r in got] == [r.confidences for r in want]


def test_numpy_normalization_is_the_preprocessors(tiny):
    pre = tiny.preprocess
    for im in photos(2):
        assert np.array_equal(pre.normalize(pre.to_uint8(im).transpose(2, 0, 1)), pre(im))
