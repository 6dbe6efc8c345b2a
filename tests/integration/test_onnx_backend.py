"""The ONNX Runtime backend against the torch backend, and what it says about bad export directories."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from blipcap import Captioner, resolve_options
from blipcap.errors import BackendError, ModelLoadError
from blipcap.hub import ONNX_MANIFEST


@pytest.fixture(scope="module")
def tiny_export(tiny_checkpoint, tmp_path_factory):
    from blipcap.export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "tiny-onnx"
    export_onnx(str(tiny_checkpoint), out, verify_images=2, quiet=True)
    return out


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(7)
    out = []
    for i in range(5):
        h, w = 40 + 9 * i, 70 - 5 * i
        out.append(Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8")))
    return out


@pytest.fixture(scope="module")
def torch_cap(tiny_checkpoint):
    return Captioner(str(tiny_checkpoint), backend="torch", device="cpu")


@pytest.fixture(scope="module")
def onnx_cap(tiny_export):
    return Captioner(str(tiny_export))


def test_exported_directory_picks_the_onnx_backend(onnx_cap):
    assert onnx_cap.backend.name == "onnx"
    assert (onnx_cap.device, onnx_cap.dtype) == ("cpu", "float32")
    assert onnx_cap.random_weights  # the flag travels with the export
    from blipcap.options import CaptionOptions

    prov = onnx_cap.provenance_for(CaptionOptions())
    assert (prov.backend, prov.dtype) == ("onnx", "float32")


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"num_beams": 3},
        {"preset": "coco"},
        {"num_beams": 3, "num_captions": 2, "max_new_tokens": 12},
        {"prompt": "a photo of", "repetition_penalty": 1.3},
    ],
    ids=["greedy", "beam3", "coco", "beam-k2", "prompt-penalty"],
)
def test_same_captions_as_the_torch_backend(torch_cap, onnx_cap, images, overrides):
    expected = [r.captions for r in torch_cap.caption(images, batch_size=2, **overrides)]
    got = [r.captions for r in onnx_cap.caption(images, batch_size=3, **overrides)]
    assert got == expected
    assert len({tuple(c) for c in got}) > 1  # different images, different captions


def test_prompt_continued_by_a_word_piece(torch_cap, onnx_cap):
    """The coco prompt continued by a ``##`` piece reads as in the whole sequence, on both backends."""
    from tests.conftest import sample_photos

    photos = sample_photos()
    options = resolve_options(preset="coco", num_beams=3, num_captions=2)
    got = [r.captions for r in onnx_cap.caption(photos, options=options)]
    assert got == [r.captions for r in torch_cap.caption(photos, options=options)]
    assert not any(text.startswith("##") for captions in got for text in captions)
    # Not blind: some caption does start with a continuation piece.
    tokens = onnx_cap.generate_tokens(np.stack([onnx_cap.preprocess(p) for p in photos]), options)
    firsts = [onnx_cap.tokenizer.decode(t[:1]) for per_image in tokens for t in per_image]
    assert any(first.startswith("##") for first in firsts)


def test_batch_composition_does_not_change_tokens(onnx_cap, images):
    one = [r.caption for r in onnx_cap.caption(images, batch_size=1, num_beams=3)]
    five = [r.caption for r in onnx_cap.caption(images, batch_size=5, num_beams=3)]
    assert one == five


def test_dtype_and_device_requests(tiny_export):
    with pytest.raises(BackendError, match="float32 export.*--quantize int8"):
        Captioner(str(tiny_export), dtype="int8")
    with pytest.raises(BackendError, match="float32 export"):
        Captioner(str(tiny_export), dtype="float16")
    with pytest.raises(BackendError, match="no CUDA provider.*onnxruntime-gpu"):
        Captioner(str(tiny_export), device="cuda")
    with pytest.raises(BackendError, match="exported ONNX directory"):
        Captioner(str(tiny_export), backend="torch")


def test_onnx_backend_on_a_checkpoint_says_export_first(tiny_checkpoint):
    with pytest.raises(BackendError, match="blipcap export onnx"):
        Captioner(str(tiny_checkpoint), backend="onnx")


# -- bad export directories ---------------------------------------------------------------------


def _copy(src, tmp_path):
    dst = tmp_path / "export"
    shutil.copytree(src, dst)
    return dst


def _manifest(d):
    return json.loads((d / ONNX_MANIFEST).read_text())


def test_missing_graph_file(tiny_export, tmp_path):
    d = _copy(tiny_export, tmp_path)
    (d / "decoder.onnx").unlink()
    with pytest.raises(ModelLoadError, match=r"decoder\.onnx is missing.*blipcap export onnx"):
        Captioner(str(d))


def test_missing_tokenizer(tiny_export, tmp_path):
    d = _copy(tiny_export, tmp_path)
    (d / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json is missing"):
        Captioner(str(d))


@pytest.mark.parametrize("version", [1, 99])  # an older blipcap's (stacked cache), a newer one's
def test_manifest_from_another_format_version(tiny_export, tmp_path, version):
    d = _copy(tiny_export, tmp_path)
    raw = _manifest(d)
    raw["format_version"] = version
    raw["blipcap_version"] = "9.0.0"
    (d / ONNX_MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(
        ModelLoadError,
        match=rf"format version {version} \(by blipcap 9\.0\.0\).*reads format version 2\. "
        r"Upgrade blipcap, or export the model again: blipcap export onnx",
    ):
        Captioner(str(d))


def test_manifest_that_is_not_ours(tiny_export, tmp_path):
    d = _copy(tiny_export, tmp_path)
    (d / ONNX_MANIFEST).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelLoadError, match="not a blipcap ONNX manifest"):
        Captioner(str(d))
    (d / ONNX_MANIFEST).write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON|cannot read"):
        Captioner(str(d))


def test_modified_graph_does_not_match_the_manifest(tiny_export, tmp_path):
    d = _copy(tiny_export, tmp_path)
    data = (d / "vision.onnx").read_bytes()
    (d / "vision.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"vision\.onnx in .* does not match the sha256"):
        Captioner(str(d))


def test_corrupt_graph_with_a_matching_manifest(tiny_export, tmp_path):
    """Even when the manifest was rewritten to match, ONNX Runtime's refusal becomes a clear error."""
    from blipcap.hub import file_sha256

    d = _copy(tiny_export, tmp_path)
    (d / "decoder.onnx").write_bytes(b"\x08\x07garbage" * 100)
    raw = _manifest(d)
    raw["files"]["decoder.onnx"] = file_sha256(d / "decoder.onnx")
    (d / ONNX_MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match=r"ONNX Runtime cannot load .*decoder\.onnx.*damaged"):
        Captioner(str(d))
