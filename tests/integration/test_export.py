"""``blipcap export onnx``: files, manifest, verification, int8, and refusals."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from blipcap import __version__
from blipcap.cli import main
from blipcap.errors import ExportError, OptionsError
from blipcap.hub import ONNX_MANIFEST, file_sha256, resolve_model


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def _export(args):
    return CliRunner().invoke(main, ["export", "onnx", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "fp32"
    result = _export(
        ["--model", str(tiny_checkpoint), "--out", str(out), "--verify-images", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_export_writes_graphs_tokenizer_and_manifest(exported, tiny_checkpoint):
    out, report = exported
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        ONNX_MANIFEST, "config.json", "decoder.onnx", "generation_config.json",
        "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "vision.onnx",
        "vocab.txt",
    ]  # fmt: skip
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())
    manifest = json.loads((out / ONNX_MANIFEST).read_text())
    source = resolve_model(str(tiny_checkpoint))
    assert manifest["format"] == "blipcap-onnx" and manifest["format_version"] == 2
    assert manifest["blipcap_version"] == __version__
    assert manifest["source"]["revision"] == source.revision
    assert manifest["source"]["files"] == source.files
    assert manifest["opset"] == 17 and manifest["quantization"] is None
    assert manifest["random_weights"] is True
    # Every file but the manifest itself, with its real sha256.
    assert sorted(manifest["files"]) == sorted(n for n in names if n != ONNX_MANIFEST)
    for name, digest in manifest["files"].items():
        assert file_sha256(out / name) == digest
    assert manifest["graphs"]["vision"]["outputs"] == [
        "cross_key_0", "cross_value_0", "cross_key_1", "cross_value_1",
    ]  # fmt: skip
    assert manifest["graphs"]["decoder"]["inputs"] == [
        "input_ids", "cache_rows",
        "past_key_0", "past_value_0", "past_key_1", "past_value_1",
        "cross_key_0", "cross_value_0", "cross_key_1", "cross_value_1",
    ]  # fmt: skip
    assert manifest["graphs"]["decoder"]["outputs"] == [
        "logits", "present_key_0", "present_value_0", "present_key_1", "present_value_1",
    ]  # fmt: skip
    # The check against the torch backend, in the manifest and the report.
    v = manifest["verification"]
    assert v == report["verification"]
    assert v["ok"] is True and v["images"] == 2
    assert [(c["options"]["num_beams"], c["identical"], c["total"]) for c in v["decoding"]] == [
        (1, 2, 2),
        (3, 2, 2),
    ]
    assert v["logits"]["top1_agreement"] == 1.0 and v["logits"]["cosine_min"] > 0.99999


def test_graphs_have_dynamic_batch_and_beam_axes(exported):
    onnx = pytest.importorskip("onnx")
    out, _ = exported

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    vision = onnx.load(str(out / "vision.onnx"), load_external_data=False).graph
    assert dims(vision.input[0]) == ["images", 3, 64, 64]
    assert dims(vision.output[0]) == ["images", 4, 17, 16]
    assert dims(vision.output[1]) == ["images", 4, 17, 16]
    decoder = onnx.load(str(out / "decoder.onnx"), load_external_data=False).graph
    ins = {i.name: dims(i) for i in decoder.input}
    assert ins["input_ids"] == ["rows", "tokens"]
    assert ins["past_key_0"] == ["past_rows", 4, "past_len", 16]
    assert ins["past_value_1"] == ["past_rows", 4, "past_len", 16]
    assert ins["cross_key_0"] == ["images", 4, 17, 16]
    assert ins["cross_value_0"] == ["images", 4, 17, 16]
    outs = {o.name: dims(o) for o in decoder.output}
    assert outs["logits"] == ["rows", 30524]
    assert outs["present_key_0"] == ["rows", 4, "total_len", 16]
    assert outs["present_value_1"] == ["rows", 4, "total_len", 16]


def test_summary_is_printed(tiny_checkpoint, tmp_path):
    result = _export(
        ["--model", str(tiny_checkpoint), "--out", str(tmp_path / "x"), "--verify-images", "1"]
    )
    assert result.exit_code == 0
    assert "verify greedy  : 1/1 images with tokens identical to the torch backend" in result.stdout
    assert "verify beam 3  : 1/1 images with tokens identical to the torch backend" in result.stdout


def test_refuses_to_overwrite(exported, tiny_checkpoint, tmp_path):
    out, _ = exported
    result = CliRunner().invoke(
        main, ["export", "onnx", "--model", str(tiny_checkpoint), "--out", str(out)]
    )
    assert result.exit_code == 2 and "--overwrite" in result.output
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(
        main,
        ["export", "onnx", "--model", str(tiny_checkpoint), "--out", str(other), "--overwrite"],
    )
    assert result.exit_code == 2 and "not a blipcap export" in result.output
    assert (other / "notes.txt").read_text() == "keep me"


def test_refuses_an_onnx_directory_as_source(exported, tmp_path):
    from blipcap.export import export_onnx

    out, _ = exported
    with pytest.raises(OptionsError, match="already an ONNX export"):
        export_onnx(str(out), tmp_path / "again", quiet=True)


def test_failed_verification_is_an_error_and_writes_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    """Graphs exported from different weights than the checkpoint's: the tokens differ."""
    from blipcap.export import onnx as export_module
    from blipcap.model.config import BlipConfig
    from blipcap.model.weights import load_model
    from tests.conftest import checkpoint

    other = checkpoint("tiny", seed=5)
    real = export_module.export_graphs

    def wrong_weights(lean, config, out, opset, quiet=True):
        import torch

        impostor = load_model(
            other,
            BlipConfig.from_dict(json.loads((other / "config.json").read_text())),
            torch.float32,
            "cpu",
        )
        return real(impostor, config, out, opset, quiet)

    monkeypatch.setattr(export_module, "export_graphs", wrong_weights)
    out = tmp_path / "bad"
    with pytest.raises(
        ExportError, match=r"does not reproduce the torch backend's tokens.*images differ"
    ):
        export_module.export_onnx(str(tiny_checkpoint), out, verify_images=2, quiet=True)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the work directory is gone too


def _has_vnni() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX-512 VNNI or AVX-VNNI)."""
    try:
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


# ONNX Runtime's int8 kernels agree less with float32 on a CPU without VNNI
# (tiny shape: decoder cosine mean 0.99968 with AVX-512 VNNI, 0.99843 with AVX2 alone,
# top-1 agreement 88% there, the random model's near-ties flipping; int8-vision minimum
# 0.9999 and 0.9976); see docs/onnx.md.
INT8_COSINE, INT8_TOP1 = (0.999, 0.9) if _has_vnni() else (0.997, 0.85)


@pytest.mark.slow
def test_int8_export(tiny_checkpoint, tmp_path):
    from blipcap import Captioner

    out = tmp_path / "int8"
    result = _export(
        ["--model", str(tiny_checkpoint), "--out", str(out), "--quantize", "int8", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    manifest = json.loads((out / ONNX_MANIFEST).read_text())
    assert manifest["quantization"] == "int8"
    assert "MatMulNBits" in manifest["exporter"]["quantization"]["decoder"]
    logits = report["verification"]["logits"]
    assert logits["positions"] == 3 * 20
    assert logits["cosine_mean"] > INT8_COSINE and logits["top1_agreement"] > INT8_TOP1
    onnx = pytest.importorskip("onnx")

    def float_weight_products(graph):
        """MatMul/Gemm nodes that still multiply by a float32 weight (not activations)."""
        weights = {i.name for i in graph.initializer}
        return [
            n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and set(n.input) & weights
        ]

    decoder = onnx.load(str(out / "decoder.onnx")).graph
    assert (
        sum(n.op_type == "MatMulNBits" for n in decoder.node) == 2 * 6 + 2
    )  # per layer: self-attention q/k/v (one product), its output, cross query and output,
    # two feed-forward; then the LM head and its transform
    assert float_weight_products(decoder) == []
    vision = onnx.load(str(out / "vision.onnx")).graph
    assert (
        sum(n.op_type == "MatMulInteger" for n in vision.node) == 2 * 6 + 2 * 2
    )  # ViT (query, key, value, output, two feed-forward per layer) + cross K/V
    assert float_weight_products(vision) == []
    cap = Captioner(str(out))
    assert (cap.backend.name, cap.dtype) == ("onnx", "int8")
    assert sum(p.stat().st_size for p in out.glob("*.onnx")) < 0.75 * sum(
        p.stat().st_size for p in (tiny_checkpoint).glob("model.safetensors")
    )


@pytest.mark.slow
def test_int8_vision_export_keeps_the_decoder_float32(tiny_checkpoint, tmp_path):
    onnx = pytest.importorskip("onnx")
    from blipcap import Captioner

    out = tmp_path / "int8-vision"
    result = _export(
        ["--model", str(tiny_checkpoint), "--out", str(out), "--quantize", "int8-vision", "--json"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / ONNX_MANIFEST).read_text())
    assert manifest["quantization"] == "int8-vision"
    assert manifest["exporter"]["quantization"]["decoder"] == "float32"
    decoder_ops = {n.op_type for n in onnx.load(str(out / "decoder.onnx")).graph.node}
    assert "MatMulNBits" not in decoder_ops and "MatMul" in decoder_ops
    vision_ops = {n.op_type for n in onnx.load(str(out / "vision.onnx")).graph.node}
    assert "MatMulInteger" in vision_ops
    assert json.loads(result.stdout)["verification"]["logits"]["cosine_min"] > INT8_COSINE
    assert Captioner(str(out)).dtype == "int8"
