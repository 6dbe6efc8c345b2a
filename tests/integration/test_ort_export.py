"""`blipcap export ort`: ORT-format graphs that ONNX Runtime runs with the same tokens as the .onnx ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from blipcap import Captioner
from blipcap.cli import main
from blipcap.errors import OptionsError
from blipcap.hub import ONNX_MANIFEST

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(11)
    return [
        Image.fromarray((rng.random((40 + 9 * i, 70 - 5 * i, 3)) * 255).astype("uint8"))
        for i in range(4)
    ]


@pytest.fixture(scope="module")
def onnx_exports(tiny_checkpoint, tmp_path_factory):
    from blipcap.export import export_onnx

    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for quantize in (None, "int8"):
        out[quantize] = root / f"tiny-{quantize or 'fp32'}"
        export_onnx(
            str(tiny_checkpoint), out[quantize], quantize=quantize, verify_images=1, quiet=True
        )
    return out


def captions(model_dir, images, **overrides):
    cap = Captioner(str(model_dir), device="cpu")
    assert cap.backend.name == "onnx"
    return [r.captions for r in cap.caption(images, batch_size=2, **overrides)]


@pytest.mark.parametrize("quantize", [None, "int8"], ids=["fp32", "int8"])
def test_ort_files_give_the_tokens_of_the_onnx_export(onnx_exports, images, tmp_path, quantize):
    out = tmp_path / "ort"
    args = ["export", "ort", "--model", str(onnx_exports[quantize]), "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--verify-images", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["files"]["decoder.ort"] == (out / "decoder.ort").stat().st_size
    names = sorted(p.name for p in out.iterdir())
    assert {"vision.ort", "decoder.ort", "required_operators.config", ONNX_MANIFEST} <= set(names)
    assert not [n for n in names if n.endswith(".onnx")]
    manifest = json.loads((out / ONNX_MANIFEST).read_text())
    assert manifest["graphs"]["vision"]["file"] == "vision.ort"
    assert manifest["quantization"] == quantize
    assert manifest["verification"]["ort_format"]["ok"]
    for overrides in ({}, {"num_beams": 3, "num_captions": 2}):
        expected = captions(onnx_exports[quantize], images, **overrides)
        assert captions(out, images, **overrides) == expected
        assert len({tuple(c) for c in expected}) > 1  # different images, different captions


def test_portable_export_stays_inside_the_mobile_package(tiny_checkpoint, images, tmp_path):
    from blipcap.export.ort import export_ort

    report = export_ort(str(tiny_checkpoint), tmp_path / "ort", verify_images=1, quiet=True)
    assert report.outside_mobile == []
    ops = {op for key, names in report.operators.items() for op in names}
    assert "MultiHeadAttention" not in ops and {"MatMul", "Softmax", "Conv"} <= ops
    assert all(key.startswith("ai.onnx;") for key in report.operators)
    manifest = json.loads((tmp_path / "ort" / ONNX_MANIFEST).read_text())
    assert manifest["opset"] == 15
    assert manifest["exporter"]["ort_format"]["outside_mobile_package"] == []
    # Portable graphs still give the torch backend's tokens (export_onnx checked the .onnx).
    torch_cap = Captioner(str(tiny_checkpoint), backend="torch", device="cpu")
    expected = [r.captions for r in torch_cap.caption(images)]
    assert captions(tmp_path / "ort", images) == expected


def test_converted_fused_export_reports_what_the_mobile_package_lacks(onnx_exports, tmp_path):
    from blipcap.export.ort import export_ort

    report = export_ort(onnx_exports[None], tmp_path / "ort", verify_images=1, quiet=True)
    assert "com.microsoft:MultiHeadAttention(1)" in report.outside_mobile
    assert any(o.startswith("ai.onnx opset 17") for o in report.outside_mobile)


def test_mobile_check_of_an_operator_list():
    from blipcap.export.ort import outside_mobile_package

    ops = {"ai.onnx;13": ["MatMul", "IsNaN"], "ai.onnx;1": ["LayerNormalization"],
           "com.microsoft;1": ["SkipLayerNormalization", "MatMulNBits"]}  # fmt: skip
    assert outside_mobile_package(ops, {"ai.onnx": 15}) == [
        "ai.onnx:IsNaN(13)",
        "com.microsoft:MatMulNBits(1)",
    ]


def test_quantize_needs_a_checkpoint(onnx_exports, tmp_path):
    from blipcap.export.ort import export_ort

    with pytest.raises(OptionsError, match="already an ONNX export"):
        export_ort(onnx_exports[None], tmp_path / "x", quantize="int8", quiet=True)
