"""TensorFlow weights (tf_model.h5) read by name with h5py: the same tensors and tokens as safetensors.

The fixture (tests/fixtures/tf-tiny) was written once by TensorFlow BLIP and
converted to safetensors by transformers' own TF -> PyTorch loading; see its README.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blipcap import Captioner
from blipcap.errors import ModelLoadError
from blipcap.hub import resolve_model

pytest.importorskip("h5py", reason="reading tf_model.h5 needs blipcap[tf] (h5py)")

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tf-tiny"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    """The fixture split in two: TensorFlow weights only, safetensors only."""
    root = tmp_path_factory.mktemp("tf-tiny")
    out = {}
    for kind, drop in (("h5", "model.safetensors"), ("st", "tf_model.h5")):
        out[kind] = root / kind
        shutil.copytree(FIXTURE, out[kind])
        (out[kind] / drop).unlink()
    return out


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    return [
        Image.fromarray((rng.random((30 + 7 * i, 50 - 4 * i, 3)) * 255).astype("uint8"))
        for i in range(4)
    ]


def test_a_directory_with_only_tf_weights_resolves_to_them(dirs):
    files = resolve_model(dirs["h5"])
    assert files.kind == "hf"
    assert files.weights == dirs["h5"].resolve() / "tf_model.h5"
    assert "tf_model.h5" in files.files


def test_safetensors_are_preferred_when_both_are_there():
    files = resolve_model(FIXTURE)
    assert files.weights == FIXTURE / "model.safetensors"
    assert "tf_model.h5" not in files.files


def test_tf_weights_read_into_the_same_tensors_as_safetensors(dirs):
    from blipcap.model.weights import read_state_dict, weight_files

    tf = read_state_dict(weight_files(dirs["h5"]))
    st = read_state_dict(weight_files(dirs["st"]))
    assert sorted(tf) == sorted(st)
    for key, tensor in st.items():
        assert tf[key].dtype == tensor.dtype and tf[key].shape == tensor.shape, key
        assert np.array_equal(tf[key].numpy(), tensor.numpy()), key
    # The transposes really happened: a Conv2D and a Dense kernel in PyTorch layout.
    assert tuple(tf["vision_model.embeddings.patch_embedding.weight"].shape) == (48, 3, 8, 8)
    assert tuple(tf["text_decoder.cls.predictions.decoder.weight"].shape) == (123, 32)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"num_beams": 3, "num_captions": 2}, {"preset": "coco"}],
    ids=["greedy", "beam3-k2", "coco"],
)
def test_same_tokens_as_safetensors(dirs, images, overrides):
    got = {}
    for kind, path in dirs.items():
        cap = Captioner(str(path), backend="torch", device="cpu")
        got[kind] = [r.captions for r in cap.caption(images, **overrides)]
    assert got["h5"] == got["st"]
    assert len({tuple(c) for c in got["h5"]}) > 1  # different images, different captions


def test_tf_name_mapping():
    from blipcap.model.tf_weights import tf_to_pt_name, to_pytorch_layout

    name = "blip_for_conditional_generation/vision_model/encoder/layers_._1/self_attn/qkv/kernel:0"
    assert tf_to_pt_name(name) == ("vision_model.encoder.layers.1.self_attn.qkv.weight", "dense")
    assert tf_to_pt_name("m/text_decoder/bert/embeddings/LayerNorm/gamma:0")[0] == (
        "text_decoder.bert.embeddings.LayerNorm.weight"
    )
    assert tf_to_pt_name("m/a/LayerNorm/beta:0") == ("a.LayerNorm.bias", "none")
    assert tf_to_pt_name("m/a/word_embeddings/embeddings:0") == ("a.word_embeddings.weight", "none")
    hwio = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert to_pytorch_layout(hwio, "dense").shape == (5, 4, 2, 3)
    assert to_pytorch_layout(hwio, "dense")[4, 3, 1, 2] == hwio[1, 2, 3, 4]


def test_a_damaged_h5_file_is_a_load_error(dirs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(dirs["h5"], broken)
    data = (broken / "tf_model.h5").read_bytes()
    (broken / "tf_model.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match="could not read TensorFlow weights"):
        Captioner(str(broken), backend="torch", device="cpu")


def test_a_hub_repository_without_pytorch_weights_fetches_tf_model_h5(dirs, monkeypatch, tmp_path):
    # The hub is faked: each call "downloads" the files its patterns allow from the h5 copy.
    import fnmatch

    monkeypatch.setenv("BLIPCAP_CACHE_DIR", str(tmp_path / "blipcap-cache"))
    calls: list[list[str]] = []
    snapshot = tmp_path / "snapshot"

    def fake_snapshot_download(repo_id, allow_patterns, **kwargs):
        calls.append(list(allow_patterns))
        snapshot.mkdir(exist_ok=True)
        for f in dirs["h5"].iterdir():
            if any(fnmatch.fnmatch(f.name, p) for p in allow_patterns):
                shutil.copyfile(f, snapshot / f.name)
        return str(snapshot)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    files = resolve_model("someone/blip-tf-only", offline=False)
    assert files.weights == snapshot / "tf_model.h5"
    assert ["tf_model.h5" in patterns for patterns in calls] == [False, False, True]


def test_tensorflow_blips_own_captions_are_reproduced(dirs):
    """tf_reference.json: greedy captions TFBlipForConditionalGeneration.generate wrote for the
    fixture's images (BlipProcessor preprocessing) when it made tf_model.h5."""
    import json

    reference = json.loads((FIXTURE / "tf_reference.json").read_text())
    cap = Captioner(str(dirs["h5"]), backend="torch", device="cpu")
    results = cap.caption(  # TensorFlow's plain greedy: no artifact cleanup, no guard
        [FIXTURE / r["image"] for r in reference],
        max_new_tokens=20,
        clean_artifacts=False,
        guard=False,
    )
    assert [r.caption for r in results] == [r["caption"] for r in reference]
    assert len({r["caption"] for r in reference}) == len(reference)
