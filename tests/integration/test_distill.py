"""``blipcap distill``: the training forward, the student's initialization, and a tiny real run.

The run distills the tiny random checkpoint (2 + 2 layers) into a 1 + 1 layer
student on generated images: agreement with the teacher on held-back images
rises, the run resumes from its saved state, and the result loads with
blipcap's Captioner and with transformers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from blipcap import Captioner
from blipcap.cli import main
from blipcap.distill import StudentShape, init_student, pick_layers, student_config
from blipcap.distill.train import consistent_view
from blipcap.model.config import BlipConfig
from blipcap.model.weights import hf_state_dict, load_model, save_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from distill_images import make_images  # noqa: E402


def _load(directory: Path):
    raw = json.loads((directory / "config.json").read_text())
    config = BlipConfig.from_dict(raw)
    return raw, config, load_model(directory, config, torch.float32, "cpu")


def _inputs(config: BlipConfig, n: int = 2, t: int = 6):
    g = torch.Generator().manual_seed(0)
    size = config.vision.image_size
    pixels = torch.randn(n, 3, size, size, generator=g)
    ids = torch.randint(1000, 5000, (n, t), generator=g)
    ids[:, 0] = config.text.bos_token_id
    return pixels, ids


def test_teacher_forced_forward_matches_transformers_and_trains(tiny_checkpoint):
    from transformers import BlipForConditionalGeneration

    _, config, model = _load(tiny_checkpoint)
    reference = BlipForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    pixels, ids = _inputs(config)
    with torch.no_grad():
        ours = model(pixels, ids)
        theirs = reference(pixel_values=pixels, input_ids=ids).logits
    assert ours.shape == (2, 6, config.text.vocab_size)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    # The last position equals the cached decoding path's logits.
    cache = model.text_decoder.new_cache(2, 8, "cpu", torch.float32)
    with torch.no_grad():
        cross = model.text_decoder.cross_kv(model.vision_model(pixels))
        stepped = model.text_decoder(ids, cache, cross, 1)
    torch.testing.assert_close(stepped, ours[:, -1], rtol=1e-4, atol=1e-4)
    # Gradients reach every weight.
    model.requires_grad_(True)
    model(pixels, ids).logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_weights_are_written_back_under_hf_key_names(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file

    _, config, model = _load(tiny_checkpoint)
    original = load_file(tiny_checkpoint / "model.safetensors")
    ours = hf_state_dict(model)
    assert sorted(ours) == sorted(original)
    for key, value in original.items():
        assert torch.equal(ours[key], value), key
    save_weights(model, tmp_path / "model.safetensors")
    assert sorted(load_file(tmp_path / "model.safetensors")) == sorted(original)


def test_layers_are_picked_evenly_with_first_and_last():
    assert pick_layers(12, 6) == [0, 2, 4, 7, 9, 11]
    assert pick_layers(24, 12) == [0, 2, 4, 6, 8, 10, 13, 15, 17, 19, 21, 23]
    assert pick_layers(3, 2) == [0, 2]
    assert pick_layers(12, 1) == [11]
    assert pick_layers(4, 4) == [0, 1, 2, 3]


def test_student_init_copies_the_teacher(tiny_checkpoint):
    raw, config, teacher = _load(tiny_checkpoint)
    pixels, ids = _inputs(config)
    # All layers at full width: the student is the teacher.
    same = StudentShape(2, 2)
    student = init_student(teacher, BlipConfig.from_dict(student_config(raw, config, same)), same)
    with torch.no_grad():
        torch.testing.assert_close(student(pixels, ids), teacher(pixels, ids))
    # Fewer layers and a narrower vision encoder (4 heads of 12 -> 2 heads).
    small = StudentShape(1, 1, vision_width=24)
    small_raw = student_config(raw, config, small)
    assert small_raw["vision_config"]["num_attention_heads"] == 2
    assert small_raw["vision_config"]["intermediate_size"] == 48
    assert small_raw["text_config"]["encoder_hidden_size"] == 24
    student = init_student(teacher, BlipConfig.from_dict(small_raw), small)
    last = teacher.vision_model.encoder.layers[1].mlp.fc1.weight
    assert torch.equal(student.vision_model.encoder.layers[0].mlp.fc1.weight, last[:48, :24])
    qkv = teacher.vision_model.encoder.layers[1].self_attn.qkv.weight.reshape(3, 48, 48)
    assert torch.equal(
        student.vision_model.encoder.layers[0].self_attn.qkv.weight,
        qkv[:, :24, :24].reshape(72, 24),
    )
    assert student(pixels, ids).shape == (2, 6, config.text.vocab_size)


def test_consistent_view_flips_and_mixes_within_the_batch():
    # Four flat images 0, 1, 2, 3 and a ramp: a view is flipped or not, then mixed
    # with another image of the batch by a weight in [0, 1].
    flat = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 2, 2)
    views = consistent_view(flat, torch.Generator().manual_seed(0))
    assert views.shape == flat.shape
    assert torch.equal(views, consistent_view(flat, torch.Generator().manual_seed(0)))
    assert not torch.equal(views, consistent_view(flat, torch.Generator().manual_seed(1)))
    for v in views:  # still flat, between the darkest and the brightest image
        assert torch.all(v == v.flatten()[0]) and 0 <= v.flatten()[0] <= 3
    assert not torch.equal(views, flat)  # mixed
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 3, 2, 4)
    flips = {tuple(consistent_view(ramp, torch.Generator().manual_seed(s))[0, 0, 0].tolist())
             for s in range(20)}  # fmt: skip
    assert flips == {(0.0, 1.0, 2.0, 3.0), (3.0, 2.0, 1.0, 0.0)}  # one image: flipped or not


def test_the_vocabulary_is_frozen_by_default(tiny_checkpoint, tmp_path):
    """Word embeddings and the LM head (tied) keep the teacher's values; the layers train."""
    images = tmp_path / "images"
    make_images(images, 8, size=64, seed=1)
    result = _distill(images, tmp_path / "s", "--model", str(tiny_checkpoint), "--epochs", "1",
                      "--val-images", "2")  # fmt: skip
    assert result.exit_code == 0, result.output
    _, _, teacher = _load(tiny_checkpoint)
    _, _, student = _load(tmp_path / "s")
    t, s = teacher.text_decoder, student.text_decoder
    assert torch.equal(
        s.bert.embeddings.word_embeddings.weight, t.bert.embeddings.word_embeddings.weight
    )
    assert torch.equal(s.cls.predictions.decoder.bias, t.cls.predictions.decoder.bias)
    assert not torch.equal(s.cls.predictions.transform.dense.weight,
                           t.cls.predictions.transform.dense.weight)  # fmt: skip


def _distill(images: Path, out: Path, *extra: str):
    args = [
        "distill", str(images), "--out", str(out), "--vision-layers", "1", "--text-layers", "1",
        "--batch-size", "6", "--val-images", "6", "--max-new-tokens", "6", "--lr", "2e-3",
        "--device", "cpu", "--json", *extra,
    ]  # fmt: skip
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def run(tiny_checkpoint, tmp_path_factory):
    """One epoch, then the same command with --epochs 2: it resumes and trains the second."""
    root = tmp_path_factory.mktemp("distill")
    images = root / "images"
    make_images(images, 24, size=64, seed=0)
    out = root / "student"
    first = _distill(images, out, "--model", str(tiny_checkpoint), "--epochs", "1")
    assert first.exit_code == 0, first.output
    second = _distill(images, out, "--model", str(tiny_checkpoint), "--epochs", "2")
    assert second.exit_code == 0, second.output
    return images, out, json.loads(first.stdout), second


def test_agreement_with_the_teacher_rises(run):
    _, out, first, second = run
    report = json.loads(second.stdout)
    assert [h["epoch"] for h in report["history"]] == [0, 1, 2]
    assert report["train_images"] == 18 and report["val_images"] == 6
    before, after = report["history"][0], report["history"][-1]
    assert after["token_agreement"] > before["token_agreement"], report["history"]
    assert after["exact_match"] >= before["exact_match"]
    assert report["student_parameters"] < report["teacher_parameters"]
    assert json.loads((out / "distill.json").read_text()) == report


def test_rerunning_resumes_from_the_saved_step(run, tiny_checkpoint):
    images, out, first, second = run
    report = json.loads(second.stdout)
    assert first["steps"] == 3 and report["steps"] == 6
    assert "resuming from step 3" in second.stderr
    assert report["history"][:2] == first["history"]  # the first epoch was not redone
    # A finished run re-run with the same settings trains nothing more.
    again = _distill(images, out, "--model", str(tiny_checkpoint), "--epochs", "2")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["history"] == report["history"]
    # Other settings in the same directory are refused, not mixed in.
    other = CliRunner().invoke(
        main,
        ["distill", str(images), "--out", str(out), "--model", str(tiny_checkpoint),
         "--vision-layers", "2", "--text-layers", "1", "--val-images", "6", "--max-new-tokens", "6"],
    )  # fmt: skip
    assert other.exit_code == 2
    assert "another --out" in other.output


def test_student_loads_with_captioner_and_transformers(run):
    from transformers import BlipForConditionalGeneration

    images, out, _, _ = run
    names = sorted(p.name for p in out.iterdir())
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"):
        assert name in names
    config = json.loads((out / "config.json").read_text())
    assert config["vision_config"]["num_hidden_layers"] == 1
    assert config["text_config"]["num_hidden_layers"] == 1
    cap = Captioner(str(out), backend="torch", device="cpu")
    [result] = cap.caption([images / "img0000.png"], max_new_tokens=6)
    assert result.ok and result.caption and result.provenance.random_weights
    reference, info = BlipForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"], info
    assert not info["unexpected_keys"], info
    _, student_config_, student = _load(out)
    pixels, ids = _inputs(student_config_)
    with torch.no_grad():
        torch.testing.assert_close(
            student(pixels, ids), reference.eval()(pixel_values=pixels, input_ids=ids).logits,
            rtol=1e-4, atol=1e-4,
        )  # fmt: skip
