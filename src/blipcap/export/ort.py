"""``blipcap export ort``: the two graphs in ONNX Runtime's ORT format, for mobile and minimal builds.

From a Hugging Face checkpoint the graphs are exported *portable*: opset 15
and attention as plain ONNX operators (MatMul, Softmax, ...) instead of
``com.microsoft.MultiHeadAttention``, so that every operator is in the set of
ONNX Runtime's mobile package (:data:`MOBILE_ONNX_OPS`), then converted with
ONNX Runtime itself (what ``python -m onnxruntime.tools.convert_onnx_models_to_ort``
does: an ``InferenceSession`` that saves its optimized graph as ``.ort``). An
existing ``blipcap export onnx`` directory can be converted as it is, with its
fused operators; the report says which operators fall outside the mobile set.

Before anything is written to ``out``, the ``.ort`` files are run through
ONNX Runtime next to the ``.onnx`` files they came from: the tokens must be
identical (greedy and beam search), or the export fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._optional import require
from ..errors import ExportError, OptionsError
from ..hub import METADATA_FILES, ONNX_MANIFEST, resolve_model

PORTABLE_OPSET = 15  # the newest opset ONNX Runtime's mobile package (1.11-1.18) registered
OPTIMIZATIONS = ("basic", "extended", "all")
OPERATORS_CONFIG = "required_operators.config"

# ONNX Runtime's mobile package: tools/ci_build/github/android/mobile_package.required_operators.config
# (the "ORT Mobile" pre-built package, last released with 1.18; ai.onnx opsets 12-15, documented at
# onnxruntime.ai/docs/reference/operators/mobile_package_op_type_support_1.11.html and later).
MOBILE_ONNX_OPS = frozenset(
    """Abs Add And ArgMax ArgMin AveragePool Cast Ceil Clip Concat ConstantOfShape Conv ConvTranspose
    Cos CumSum DepthToSpace DequantizeLinear Div DynamicQuantizeLinear Elu Equal Erf Exp Expand Flatten
    Floor Gather GatherND Gemm GlobalAveragePool Greater GreaterOrEqual Identity If
    InstanceNormalization LRN LeakyRelu Less LessOrEqual Log LogSoftmax Loop MatMul MatMulInteger Max
    MaxPool Mean Min Mul Neg NonMaxSuppression NonZero Not Or PRelu Pad Pow QLinearConv QLinearMatMul
    QuantizeLinear Range Reciprocal ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum Relu Reshape
    Resize ReverseSequence Round Scan ScatterND Shape Sigmoid Sin Size Slice Softmax SpaceToDepth
    Split Sqrt Squeeze Sub Sum Tanh ThresholdedRelu Tile TopK Transpose Unique Unsqueeze
    Where""".split()
)
MOBILE_MAX_OPSET = 15
# Operators ONNX Runtime's own optimizers insert, also in the package.
MOBILE_INTERNAL_OPS = {
    "ai.onnx": frozenset({"LayerNormalization"}),  # ORT's opset-1 registration, not ONNX's 17
    "com.microsoft": frozenset(
        """BiasGelu DynamicQuantizeMatMul FusedConv FusedGemm FusedMatMul Gelu MatMulIntegerToFloat
        NhwcMaxPool QLinearAdd QLinearAveragePool QLinearConv QLinearGlobalAveragePool QLinearLeakyRelu
        QLinearMul QLinearSigmoid SkipLayerNormalization""".split()
    ),
}


@dataclass
class OrtReport:
    out: Path
    quantization: str | None
    optimization: str
    files: dict[str, int]
    """File name -> size in bytes."""
    operators: dict[str, list[str]]
    """``"domain;since_version"`` -> operator types, as in required_operators.config."""
    outside_mobile: list[str]
    """``domain:Op(version)`` of every operator the mobile package lacks (empty: all covered)."""
    verification: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        from .onnx import _human

        lines = [
            f"exported to {self.out} (ORT format, {self.quantization or 'float32'}, "
            f"{self.optimization} optimizations)"
        ]
        for name, size in sorted(self.files.items()):
            lines.append(f"  {name:28s} {_human(size):>10s}")
        for key, ops in sorted(self.operators.items()):
            lines.append(f"  operators {key}: {', '.join(ops)}")
        if self.outside_mobile:
            lines.append(
                "  NOT in ONNX Runtime's mobile package: " + ", ".join(self.outside_mobile)
            )
        else:
            lines.append("  every operator is in ONNX Runtime's mobile package")
        for check in self.verification.get("decoding", []):
            label = "greedy" if check["options"]["num_beams"] == 1 else "beam 3"
            lines.append(
                f"  verify {label:8s}: {check['identical']}/{check['total']} images with tokens "
                "identical to the .onnx graphs"
            )
        return "\n".join(lines)


def export_ort(
    model: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    quantize: str | None = None,
    optimization: str = "basic",
    revision: str | None = None,
    overwrite: bool = False,
    verify_images: int = 3,
    quiet: bool = False,
) -> OrtReport:
    """Write ``out``: vision.ort, decoder.ort, the tokenizer and config, required_operators.config
    and the manifest, from a Hugging Face checkpoint (portable graphs) or an ONNX export directory."""
    ort = require("onnxruntime", "export", "the ORT format export")
    if optimization not in OPTIMIZATIONS:
        raise OptionsError(
            f"unknown optimization {optimization!r}; choose {', '.join(OPTIMIZATIONS)}"
        )
    out = Path(out).expanduser().absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise OptionsError(
                f"{out} already exists and is not empty; choose another --out or pass --overwrite"
            )
        if out.is_dir() and not (out / ONNX_MANIFEST).exists():
            raise OptionsError(
                f"{out} is not a blipcap export (no {ONNX_MANIFEST}); refusing to overwrite it"
            )
    files = resolve_model(model, revision=revision)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    seconds: dict[str, float] = {}
    try:
        if files.kind == "onnx":
            if quantize is not None:
                raise OptionsError(
                    f"{files.path} is already an ONNX export; --quantize applies when exporting "
                    "from a Hugging Face checkpoint"
                )
            source = files.path
        else:
            from .graphs import PLAIN_ATTENTION
            from .onnx import export_onnx

            source = work / "onnx"
            t0 = time.perf_counter()
            token = PLAIN_ATTENTION.set(True)
            try:
                export_onnx(
                    files.path, source, quantize=quantize, opset=PORTABLE_OPSET,
                    verify_images=verify_images, quiet=quiet,
                )  # fmt: skip
            finally:
                PLAIN_ATTENTION.reset(token)
            seconds["export_onnx"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        target = work / "ort"
        target.mkdir()
        report = convert_to_ort(ort, source, target, optimization, verify_images, quiet)
        seconds["convert"] = time.perf_counter() - t0
        if out.exists():
            shutil.rmtree(out)
        target.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.out = out
    report.files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    report.seconds = seconds
    return report


def convert_to_ort(
    ort, source: Path, target: Path, optimization: str, verify_images: int, quiet: bool
) -> OrtReport:
    """Convert the graphs of the ONNX export ``source`` into ``target``; verify; write the manifest."""
    from ..backends.onnx_format import Manifest
    from .onnx import _digests, _log

    manifest = Manifest.read(source)
    manifest.check_files(source)
    level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    opsets = model_opsets(source, manifest)
    ort_files = []
    for graph in ("vision", "decoder"):
        onnx_name = manifest.graphs[graph]["file"]
        ort_name = Path(onnx_name).with_suffix(".ort").name
        _log(f"converting {onnx_name} to {ort_name} ...", quiet)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        opts.optimized_model_filepath = str(target / ort_name)
        opts.add_session_config_entry("session.save_model_format", "ORT")
        opts.log_severity_level = 3
        try:
            # As convert_onnx_models_to_ort: no NCHWc layouts, which only x86 CPUs run.
            ort.InferenceSession(
                str(source / onnx_name), opts, providers=["CPUExecutionProvider"],
                disabled_optimizers=["NchwcTransformer"],
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types
            raise ExportError(
                f"ONNX Runtime could not convert {onnx_name} to ORT format: {exc}"
            ) from exc
        manifest.graphs[graph] = {**manifest.graphs[graph], "file": ort_name}
        ort_files.append(target / ort_name)
    operators = required_operators(ort_files, target / OPERATORS_CONFIG)
    outside = outside_mobile_package(operators, opsets)
    for name in METADATA_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
    manifest.exporter = {
        **manifest.exporter,
        "ort_format": {
            "onnxruntime": ort.__version__,
            "optimization": optimization,
            "converted_from": _onnx_files(source),  # file name -> sha256
            "operators": operators,
            "onnx_opsets": opsets,
            "outside_mobile_package": outside,
        },
    }
    manifest.opset = opsets.get("ai.onnx", manifest.opset)
    manifest.files = _digests(target)
    manifest.write(target)
    _log("verifying the .ort graphs against the .onnx graphs ...", quiet)
    verification = verify_ort(source, target, verify_images)
    manifest.verification = {**(manifest.verification or {}), "ort_format": verification}
    manifest.write(target)
    if not verification["ok"]:
        raise ExportError(
            "the .ort graphs do not reproduce the .onnx graphs' tokens "
            f"({verification['decoding']}); nothing was written. Please report this with the "
            "versions of blipcap and onnxruntime"
        )
    return OrtReport(
        target, manifest.quantization, optimization, {}, operators, outside, verification
    )


def _onnx_files(source: Path) -> dict[str, str]:
    from ..hub import file_sha256

    return {p.name: file_sha256(p) for p in sorted(source.glob("*.onnx"))}


def required_operators(ort_files: list[Path], config: Path) -> dict[str, list[str]]:
    """Write ONNX Runtime's required-operators config (for ``--include_ops_by_config`` in a
    minimal build) and return it as ``{"domain;version": [ops]}``."""
    import logging

    from onnxruntime.tools.ort_format_model import create_config_from_models

    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    create_config_from_models(ort_files, config, enable_type_reduction=False)
    operators: dict[str, list[str]] = {}
    for line in config.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            domain, version, ops = line.strip().split(";")
            operators[f"{domain};{version}"] = sorted(ops.split(","))
    return operators


def model_opsets(source: Path, manifest) -> dict[str, int]:
    """The opset each domain is imported at, over both ONNX graphs (the newest wins)."""
    import onnx

    opsets: dict[str, int] = {}
    for graph in ("vision", "decoder"):
        model = onnx.load(str(source / manifest.graphs[graph]["file"]), load_external_data=False)
        for imp in model.opset_import:
            domain = imp.domain or "ai.onnx"
            opsets[domain] = max(opsets.get(domain, 0), imp.version)
    return opsets


def outside_mobile_package(operators: dict[str, list[str]], opsets: dict[str, int]) -> list[str]:
    """``domain:Op(version)`` of the operators that ONNX Runtime's mobile package lacks."""
    outside = []
    onnx_opset = opsets.get("ai.onnx", 0)
    if onnx_opset > MOBILE_MAX_OPSET:
        outside.append(
            f"ai.onnx opset {onnx_opset} (the package runs opsets up to {MOBILE_MAX_OPSET})"
        )
    for key, ops in sorted(operators.items()):
        domain, version = key.split(";")
        for op in ops:
            internal = op in MOBILE_INTERNAL_OPS.get(domain, ())
            standard = domain == "ai.onnx" and op in MOBILE_ONNX_OPS
            if standard and int(version) <= MOBILE_MAX_OPSET:
                continue
            if internal and (domain != "ai.onnx" or version == "1"):
                continue
            outside.append(f"{domain}:{op}({version})")
    return outside


def verify_ort(source: Path, target: Path, images: int) -> dict[str, Any]:
    """Greedy and beam-3 tokens of the .ort graphs against the .onnx graphs, on synthetic images."""
    from ..backends.onnx import OnnxBackend
    from ..decoding import SpecialTokens
    from ..hub import load_json
    from ..model.config import BlipConfig
    from ..model.processing import synthetic_images
    from ..options import CaptionOptions
    from .verify import compare_decoding

    config = BlipConfig.from_dict(load_json(source / "config.json"))
    reference = OnnxBackend(source, config, device="cpu")
    candidate = OnnxBackend(target, config, device="cpu")
    t = config.text
    special = SpecialTokens(eos=t.sep_token_id, pad=t.pad_token_id)
    pixels = synthetic_images(max(1, images), config.vision.image_size)
    checks = [
        compare_decoding(reference, candidate, pixels, [t.bos_token_id], opts, special)
        for opts in (
            CaptionOptions(max_new_tokens=20),
            CaptionOptions(num_beams=3, max_new_tokens=20),
        )
    ]
    return {
        "images": int(pixels.shape[0]),
        "decoding": [
            {
                "options": c.options,
                "identical": c.identical,
                "total": c.total,
                "mismatches": c.mismatches,
            }
            for c in checks
        ],
        "ok": all(c.ok for c in checks),
    }
