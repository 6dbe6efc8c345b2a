"""Loading image-text matching checkpoints: what is refused, and how the error says to fix it."""

from __future__ import annotations

import json
import shutil

import pytest

from blipcap.errors import ModelLoadError
from blipcap.rerank import ItmScorer

pytest.importorskip("torch")
safetensors = pytest.importorskip("safetensors.torch")


def copy_of(src, tmp_path, name="model"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def edit_weights(directory, edit):
    path = directory / "model.safetensors"
    state = safetensors.load_file(path)
    edit(state)
    safetensors.save_file(state, path)


def edit_config(directory, edit):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def test_captioning_checkpoint_without_architectures_says_which_flag(tiny_checkpoint, tmp_path):
    model = copy_of(tiny_checkpoint, tmp_path)
    edit_config(model, lambda c: c.pop("architectures"))
    with pytest.raises(ModelLoadError, match="captioning checkpoint: pass it to --model"):
        ItmScorer(str(model), device="cpu")


def test_missing_weight_is_named(tiny_itm_checkpoint, tmp_path):
    model = copy_of(tiny_itm_checkpoint, tmp_path)
    edit_weights(model, lambda s: s.pop("itm_head.weight"))
    with pytest.raises(ModelLoadError, match=r"lacks 1 weight\(s\).*itm_head.weight"):
        ItmScorer(str(model), device="cpu")


def test_shape_that_does_not_match_the_config(tiny_itm_checkpoint, tmp_path):
    model = copy_of(tiny_itm_checkpoint, tmp_path)
    edit_config(model, lambda c: c.update(image_text_hidden_size=128))
    with pytest.raises(
        ModelLoadError,
        match=r"has shape \(256, \d+\) in the checkpoint but config.json implies \(128, ",
    ):
        ItmScorer(str(model), device="cpu")


def test_unused_buffers_and_pooler_are_skipped(tiny_itm_checkpoint, tmp_path):
    import torch

    model = copy_of(tiny_itm_checkpoint, tmp_path)

    def add(state):
        state["text_encoder.embeddings.position_ids"] = torch.arange(512)[None]
        state["text_encoder.pooler.dense.weight"] = torch.zeros(64, 64)

    edit_weights(model, add)
    captions = ["a cat", "a dog on a sofa"]
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (30, 20), "orange").save(image)
    reference = ItmScorer(str(tiny_itm_checkpoint), device="cpu").score(image, captions)
    assert ItmScorer(str(model), device="cpu").score(image, captions) == reference


def test_unexpected_weight_is_refused(tiny_itm_checkpoint, tmp_path):
    import torch

    model = copy_of(tiny_itm_checkpoint, tmp_path)
    edit_weights(model, lambda s: s.update({"text_decoder.cls.bias": torch.zeros(3)}))
    with pytest.raises(ModelLoadError, match="1 unexpected weight"):
        ItmScorer(str(model), device="cpu")
