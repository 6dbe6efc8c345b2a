"""``blipcap caption --rerank itm``: candidates scored by the image-text matching model, best kept.

Tiny random captioner + tiny random ITM checkpoint, the CLI driven in-process.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from blipcap.cli import main
from blipcap.rerank import ItmScorer

pytest.importorskip("torch")


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(3)
    paths = []
    for i, size in enumerate([(40, 60), (64, 48)]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return paths, bad


@pytest.fixture(scope="module")
def scorer(tiny_itm_checkpoint):
    return ItmScorer(str(tiny_itm_checkpoint), device="cpu", dtype="float32")


def caption(*args, input=None, env=None):
    result = CliRunner().invoke(main, ["caption", *map(str, args)], input=input, env=env)
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result, records


def test_rerank_keeps_the_best_of_three_beams(tiny_checkpoint, tiny_itm_checkpoint, images, scorer):
    (a, b), bad = images
    common = ["--model", tiny_checkpoint, "--max-new-tokens", 6]
    result, records = caption(
        a, bad, b, *common, "--rerank", "itm", "--rerank-model", tiny_itm_checkpoint
    )
    assert result.exit_code == 1, result.output  # the bad image fails alone
    assert [r["path"] for r in records] == [str(a), str(bad), str(b)]
    _, plain = caption(a, b, *common, "--beams", 3, "--num-captions", 3)
    for record, path, before in zip([records[0], records[2]], [a, b], plain, strict=True):
        # K defaults to 3 beam-search candidates, recorded in the options.
        assert record["options"]["num_beams"] == 3
        assert record["options"]["num_captions"] == 3
        assert sorted(record["captions"]) == sorted(before["captions"])
        scores = record["itm_scores"]
        assert scores == sorted(scores, reverse=True)
        assert record["caption"] == record["captions"][0]
        assert record["itm_score"] == scores[0]
        expected = scorer.score(Image.open(path), record["captions"])
        np.testing.assert_allclose(scores, expected, atol=1e-6, rtol=0)
        assert record["rerank"] == {
            "method": "itm",
            "model": str(tiny_itm_checkpoint),
            "revision": scorer.files.revision,
            "random_weights": True,
        }
    failed = records[1]
    assert failed["error"]["type"] == "CorruptImageError"
    assert "itm_score" not in failed and "rerank" not in failed
    assert "RANDOM weights" in result.stderr


def test_one_caption_is_verified_not_reranked(tiny_checkpoint, tiny_itm_checkpoint, images, scorer):
    """--num-captions 1: greedy decoding as without --rerank, plus the caption's score."""
    (a, _), _ = images
    common = ["--model", tiny_checkpoint, "--max-new-tokens", 6]
    result, [record] = caption(
        a, *common, "--num-captions", 1, "--rerank", "itm", "--rerank-model", tiny_itm_checkpoint
    )
    assert result.exit_code == 0, result.output
    _, [plain] = caption(a, *common)
    assert record["caption"] == plain["caption"]
    assert record["options"] == plain["options"]
    assert "captions" not in record and "itm_scores" not in record
    assert record["itm_score"] == pytest.approx(scorer.score(Image.open(a), [plain["caption"]])[0])


def test_standard_input_is_read_once(tiny_checkpoint, tiny_itm_checkpoint, images):
    (a, _), _ = images
    result, [record] = caption(
        "-", "--model", tiny_checkpoint, "--max-new-tokens", 4, "--rerank", "itm",
        "--rerank-model", tiny_itm_checkpoint, "--format", "jsonl", input=a.read_bytes(),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert record["path"] == "-" and record["error"] is None
    assert len(record["captions"]) == 3 and 0 <= record["itm_score"] <= 1


def test_plain_format_lists_candidates_best_first(tiny_checkpoint, tiny_itm_checkpoint, images):
    (a, _), _ = images
    args = [a, "--model", tiny_checkpoint, "--max-new-tokens", 4, "--rerank", "itm"]
    args += ["--rerank-model", tiny_itm_checkpoint]
    _, [record] = caption(*args)
    result, _ = caption(*args, "--format", "plain")
    assert result.stdout.rstrip("\n").split("\t") == [str(a), *record["captions"]]


def test_rerank_model_without_rerank_is_a_usage_error(tiny_checkpoint, tiny_itm_checkpoint, images):
    (a, _), _ = images
    result, _ = caption(a, "--model", tiny_checkpoint, "--rerank-model", tiny_itm_checkpoint)
    assert result.exit_code == 2
    assert "--rerank-model" in result.output and "needs --rerank itm" in result.output
    # Set in the environment it only chooses the model; captioning without --rerank is unchanged.
    env = {"BLIPCAP_RERANK_MODEL": str(tiny_itm_checkpoint)}
    result, [record] = caption(a, "--model", tiny_checkpoint, "--max-new-tokens", 3, env=env)
    assert result.exit_code == 0, result.output
    assert "itm_score" not in record


def test_rerank_with_ray_is_a_usage_error(tiny_checkpoint, images):
    (a, _), _ = images
    result, _ = caption(a, "--engine", "ray", "--output", "out", "--rerank", "itm")
    assert result.exit_code == 2
    assert "--rerank" in result.output and "--engine ray" in result.output


def test_missing_rerank_model_names_the_fix(tiny_checkpoint, images, tmp_path):
    (a, _), _ = images
    env = {"HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "1"}
    result, records = caption(
        a, "--model", tiny_checkpoint, "--rerank", "itm", env=env
    )  # the default, Salesforce/blip-itm-large-coco, is not in an empty cache
    assert result.exit_code == 3
    assert records == []
    assert "Model 'Salesforce/blip-itm-large-coco' is not available" in result.output
    assert "download Salesforce/blip-itm-large-coco" in result.output
    assert "blipcap caption --rerank itm --rerank-model ./blip-itm-large-coco" in result.output


def test_captioning_checkpoint_is_not_a_rerank_model(tiny_checkpoint, images):
    (a, _), _ = images
    result, _ = caption(
        a, "--model", tiny_checkpoint, "--rerank", "itm", "--rerank-model", tiny_checkpoint
    )
    assert result.exit_code == 3
    assert "is a BlipForConditionalGeneration checkpoint, not an image-text matching one" in (
        result.output
    )
    assert "Salesforce/blip-itm-large-coco" in result.output


def test_onnx_captioner_is_reranked_the_same(
    tiny_checkpoint, tiny_itm_checkpoint, images, tmp_path_factory
):
    """The scorer runs on torch whatever the captioner's backend: same candidates, same scores."""
    pytest.importorskip("onnxruntime")
    from blipcap.export import export_onnx

    exported = tmp_path_factory.mktemp("onnx") / "tiny"
    export_onnx(str(tiny_checkpoint), exported, verify_images=1, quiet=True)
    (a, _), _ = images
    args = [a, "--max-new-tokens", 5, "--rerank", "itm", "--rerank-model", tiny_itm_checkpoint]
    result, [onnx] = caption(*args, "--model", exported)
    assert result.exit_code == 0, result.output
    _, [torch] = caption(*args, "--model", tiny_checkpoint)
    assert onnx["backend"] == "onnx" and torch["backend"] == "torch"
    assert onnx["captions"] == torch["captions"]
    np.testing.assert_allclose(onnx["itm_scores"], torch["itm_scores"], atol=1e-6, rtol=0)
