"""``blipcap export onnx``: the lean engine as two ONNX graphs, a manifest, and a parity check.

The export is written to a temporary directory next to ``out`` and moved into
place only after verification passed, so a failed or interrupted export never
leaves a directory that looks usable.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._optional import require
from ..backends.onnx_format import (
    CACHE_ROWS,
    DECODER_FILE,
    INPUT_IDS,
    LOGITS,
    PIXELS,
    QUANTIZATIONS,
    VISION_FILE,
    Manifest,
    cross_names,
    past_names,
    present_names,
)
from ..errors import ExportError, OptionsError
from ..hub import METADATA_FILES, ONNX_MANIFEST, file_sha256, resolve_model
from ..version import __version__

DEFAULT_OPSET = 17
MIN_OPSET = 14  # scaled_dot_product_attention needs 14


@dataclass
class ExportReport:
    out: Path
    quantization: str | None
    files: dict[str, int]
    """File name -> size in bytes."""
    verification: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"exported to {self.out} ({self.quantization or 'float32'})"]
        for name, size in sorted(self.files.items()):
            lines.append(f"  {name:28s} {_human(size):>10s}")
        v = self.verification
        for check in v.get("decoding", []):
            o = check["options"]
            label = "greedy" if o["num_beams"] == 1 else f"beam {o['num_beams']}"
            lines.append(
                f"  verify {label:8s}: {check['identical']}/{check['total']} images with tokens "
                "identical to the torch backend"
            )
        if v.get("logits"):
            lg = v["logits"]
            lines.append(
                f"  logits vs torch fp32 along its greedy path ({lg['positions']} positions): "
                f"cosine mean {lg['cosine_mean']:.6f}, min {lg['cosine_min']:.6f}, "
                f"top-1 agreement {lg['top1_agreement']:.1%}"
            )
        return "\n".join(lines)


def _human(size: float) -> str:
    if size < 1024:
        return f"{size:.0f} B"
    if size < 2**20:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 2**20:.1f} MiB"


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def export_onnx(
    model: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    quantize: str | None = None,
    opset: int = DEFAULT_OPSET,
    revision: str | None = None,
    overwrite: bool = False,
    verify_images: int = 3,
    quiet: bool = False,
) -> ExportReport:
    """Export ``model`` (hub id or Hugging Face directory) to ``out``; verify; write the manifest.

    ``quantize``: None (float32), ``"int8"`` (vision encoder and decoder) or
    ``"int8-vision"`` (vision encoder only, decoder float32). A float32 export whose tokens
    differ from the torch backend's raises :class:`ExportError`.
    """
    torch = require("torch", "export", "ONNX export")
    require("onnx", "export", "ONNX export")
    require("onnxruntime", "export", "verifying the ONNX export")
    out = _check_request(out, quantize, opset, overwrite)
    files = resolve_model(model, revision=revision)
    if files.kind == "onnx":
        raise OptionsError(
            f"{files.path} is already an ONNX export; pass the Hugging Face checkpoint it came from"
        )
    from ..model.config import BlipConfig
    from ..model.weights import load_model

    config = BlipConfig.from_dict(files.config or {})
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    _log(f"loading {files.model_id} ...", quiet)
    lean = load_model(files.path, config, torch.float32, "cpu")
    seconds["load"] = time.perf_counter() - t0

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)  # mkdtemp makes it private; the export is not
    try:
        t0 = time.perf_counter()
        graphs = export_graphs(lean, config, work, opset, quiet)
        seconds["export"] = time.perf_counter() - t0
        quant_info = None
        if quantize is not None:
            from .quantize import quantize_int8

            t0 = time.perf_counter()
            _log(f"quantizing ({quantize}) ...", quiet)
            quant_info = quantize_int8(work, decoder=quantize == "int8")
            seconds["quantize"] = time.perf_counter() - t0
        for name in METADATA_FILES:  # tokenizer, preprocessing and config, next to the graphs
            if (files.path / name).is_file():
                shutil.copyfile(files.path / name, work / name)
        manifest = _manifest(files, config, graphs, opset, quantize, quant_info)
        manifest.files = _digests(work)
        manifest.write(work)

        t0 = time.perf_counter()
        _log("verifying against the torch backend ...", quiet)
        verification = verify_export(files.path, work, config, verify_images, quantize)
        seconds["verify"] = time.perf_counter() - t0
        manifest.verification = verification
        manifest.write(work)
        if quantize is None and not verification["ok"]:
            raise ExportError(
                "the ONNX export does not reproduce the torch backend's tokens: "
                f"{_mismatch_text(verification)}. Nothing was written to {out}. Please report this "
                "with the output of `blipcap --version` and the versions of torch and onnxruntime"
            )
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    return ExportReport(out, quantize, sizes, verification, seconds)


def _check_request(
    out: str | os.PathLike[str], quantize: str | None, opset: int, overwrite: bool
) -> Path:
    """Refuse what cannot be exported before loading anything; the absolute output path."""
    if quantize not in QUANTIZATIONS:
        raise OptionsError(f"unknown quantization {quantize!r}; choose int8 or int8-vision")
    if opset < MIN_OPSET:
        raise OptionsError(f"opset {opset} is too old; the graphs need opset {MIN_OPSET} or newer")
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
    return out


def _manifest(
    files: Any,
    config: Any,
    graphs: dict[str, Any],
    opset: int,
    quantize: str | None,
    quant_info: dict[str, Any] | None,
) -> Manifest:
    """The manifest of a fresh export, before its file digests and verification are added."""
    import torch

    return Manifest(
        source_model=files.model_id,
        source_revision=files.revision,
        source_files=dict(files.files),
        opset=opset,
        quantization=quantize,
        blipcap_version=__version__,
        files={},
        graphs=graphs,
        exporter={
            "torch": torch.__version__,
            "onnx": _version("onnx"),
            "onnxruntime": _version("onnxruntime"),
            "method": "torch.onnx.export (TorchScript)",
            **({"quantization": quant_info} if quant_info else {}),
        },
        random_weights=config.random_weights,
    )


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def _digests(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): file_sha256(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ONNX_MANIFEST
    }


def _mismatch_text(verification: dict[str, Any]) -> str:
    parts = []
    for check in verification.get("decoding", []):
        if check["identical"] != check["total"]:
            first = check["mismatches"][0]
            parts.append(
                f"{check['total'] - check['identical']}/{check['total']} images differ with "
                f"num_beams={check['options']['num_beams']} (image {first['image']}: torch "
                f"{first['reference']} vs onnx {first['candidate']})"
            )
    return "; ".join(parts) or "no decoding check ran"


def export_graphs(
    lean, config, out: Path, opset: int, quiet: bool = True
) -> dict[str, dict[str, Any]]:
    """Write vision.onnx and decoder.onnx (float32) for the loaded lean model into ``out``."""
    import torch

    from .graphs import DecoderStepGraph, VisionGraph

    v, t = config.vision, config.text
    layers, heads = t.num_hidden_layers, t.num_attention_heads
    hd = t.hidden_size // heads
    cross = cross_names(layers)
    images_axis = {0: "images"}
    graphs: dict[str, dict[str, Any]] = {}

    vision = VisionGraph(lean).eval()
    pixels = torch.randn(2, 3, v.image_size, v.image_size)
    _log(f"exporting {VISION_FILE} ...", quiet)
    _torch_export(
        vision, (pixels,), out / VISION_FILE, [PIXELS], cross,
        {PIXELS: images_axis, **{n: images_axis for n in cross}}, opset,
    )  # fmt: skip
    # The exporter cannot infer these outputs' dims past the fused attention; write them in.
    _set_output_shapes(out / VISION_FILE, {n: ["images", heads, v.seq_len, hd] for n in cross})
    graphs["vision"] = {"file": VISION_FILE, "inputs": [PIXELS], "outputs": cross}

    decoder = DecoderStepGraph(lean).eval()
    with torch.no_grad():
        cross_kv = vision(pixels)
    rows = 2 * 3  # two images x three beams: example sizes only, every axis is dynamic
    ids = torch.full((rows, 1), t.bos_token_id, dtype=torch.long)
    past, present = past_names(layers), present_names(layers)
    past_kv = [torch.zeros(rows, heads, 2, hd) for _ in past]
    _log(f"exporting {DECODER_FILE} ...", quiet)
    inputs = [INPUT_IDS, CACHE_ROWS, *past, *cross]
    outputs = [LOGITS, *present]
    _torch_export(
        decoder, (ids, torch.arange(rows), *past_kv, *cross_kv), out / DECODER_FILE, inputs,
        outputs,
        {
            INPUT_IDS: {0: "rows", 1: "tokens"},
            CACHE_ROWS: {0: "rows"},
            **{n: {0: "past_rows", 2: "past_len"} for n in past},
            **{n: images_axis for n in cross},
            LOGITS: {0: "rows"},
            **{n: {0: "rows", 2: "total_len"} for n in present},
        },
        opset,
    )  # fmt: skip
    _set_output_shapes(
        out / DECODER_FILE,
        {
            LOGITS: ["rows", t.vocab_size],
            **{n: ["rows", heads, "total_len", hd] for n in present},
        },
    )
    graphs["decoder"] = {"file": DECODER_FILE, "inputs": inputs, "outputs": outputs}
    return graphs


def _set_output_shapes(path: Path, shapes: dict[str, list[int | str]]) -> None:
    import onnx

    model = onnx.load(str(path))
    for output in model.graph.output:
        if output.name in shapes:
            dims = output.type.tensor_type.shape.dim
            for dim, value in zip(dims, shapes[output.name], strict=True):
                dim.Clear()
                if isinstance(value, str):
                    dim.dim_param = value
                else:
                    dim.dim_value = value
    onnx.save(model, str(path))


def _torch_export(module, args, path: Path, inputs, outputs, dynamic_axes, opset: int) -> None:
    import torch

    # The TorchScript-based exporter: on these graphs it is ~10x faster than the
    # torch.export-based one, keeps the tied word-embedding / LM-head weight as one
    # tensor (the dynamo exporter writes it twice) and needs no onnxscript; ONNX
    # Runtime's optimizer brings both to the same fused graph (see docs/onnx.md).
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module, args, str(path), input_names=inputs, output_names=outputs,
                dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True,
                dynamo=False, custom_opsets={"com.microsoft": 1},
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - exporter errors come in many types
            raise ExportError(f"torch.onnx.export failed for {path.name}: {exc}") from exc


def verify_export(
    checkpoint: Path, export_dir: Path, config, images: int, quantize: str | None
) -> dict[str, Any]:
    """Run both backends on ``images`` synthetic images: greedy and beam 3 tokens, and (int8) logits."""
    from ..backends.onnx import OnnxBackend
    from ..backends.torch import TorchBackend
    from ..decoding import SpecialTokens
    from ..model.processing import synthetic_images
    from ..options import CaptionOptions
    from .verify import compare_decoding, logit_agreement

    torch_backend = TorchBackend(checkpoint, config, device="cpu", dtype="float32")
    onnx_backend = OnnxBackend(export_dir, config, device="cpu")
    t = config.text
    special = SpecialTokens(eos=t.sep_token_id, pad=t.pad_token_id)
    pixels = synthetic_images(max(1, images), config.vision.image_size)
    prompt = [t.bos_token_id]
    checks = [
        compare_decoding(torch_backend, onnx_backend, pixels, prompt, opts, special)
        for opts in (
            CaptionOptions(max_new_tokens=20),
            CaptionOptions(num_beams=3, max_new_tokens=20),
        )
    ]
    result: dict[str, Any] = {
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
    }
    result["logits"] = logit_agreement(
        torch_backend, onnx_backend, pixels, prompt, 20, special
    ).to_dict()
    result["ok"] = all(c.ok for c in checks)
    return result
